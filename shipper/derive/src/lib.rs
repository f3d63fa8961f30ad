//! `#[derive(Ingest)]`: implements `shipper::ingest::Ingest` for a type,
//! naming its stream with `#[ingest(stream = "...")]`.
//!
//! ```ignore
//! #[derive(serde::Serialize, shipper::ingest::Ingest)]
//! #[ingest(stream = "weather")]
//! struct Reading { sensor: u32, celsius: f32 }
//! ```
//!
//! For a struct with named fields it also writes the struct's JSON
//! (`Ingest::write_json`) the way `#[derive(Serialize)]` and serde_json
//! would, with the keys as constants; see `json.rs` in the shipper crate.
//! It follows the serde attributes that shape a struct's output
//! (`rename_all`, and `rename`, `skip`, `skip_serializing` and
//! `skip_serializing_if` on fields) and ignores those that only shape
//! deserialization. With any other serde attribute (`flatten`, `with`,
//! `tag`, `transparent`, ...), with type parameters, or with
//! `#[ingest(serde)]`, the type's `Serialize` impl writes the JSON instead.

use proc_macro::TokenStream;
use proc_macro2::TokenStream as Tokens;
use quote::quote;
use syn::ext::IdentExt;
use syn::meta::ParseNestedMeta;
use syn::{parse_macro_input, Data, DeriveInput, Fields, LitStr};

/// Implements `shipper::ingest::Ingest`; the type must also implement
/// `serde::Serialize`. `#[ingest(stream = "name")]` is required: the
/// stream is the table, subject or collection the objects end up in.
/// `#[ingest(stream = "name", serde)]` writes the JSON with the type's
/// `Serialize` impl (for a hand-written one).
#[proc_macro_derive(Ingest, attributes(ingest))]
pub fn derive_ingest(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match expand(&input) {
        Ok(tokens) => tokens.into(),
        Err(error) => error.to_compile_error().into(),
    }
}

fn expand(input: &DeriveInput) -> syn::Result<Tokens> {
    let attributes = ingest_attributes(input)?;
    let stream = attributes.stream;
    let name = &input.ident;
    let (impl_generics, type_generics, where_clause) = input.generics.split_for_impl();
    let writer = if attributes.via_serde {
        None
    } else {
        json_writer(input)?
    };
    Ok(quote! {
        impl #impl_generics ::shipper::ingest::Ingest for #name #type_generics #where_clause {
            const STREAM: &'static str = #stream;
            #writer
        }
    })
}

struct IngestAttributes {
    stream: LitStr,
    via_serde: bool,
}

/// The `#[ingest(...)]` attributes: `stream` (required), `serde`.
fn ingest_attributes(input: &DeriveInput) -> syn::Result<IngestAttributes> {
    let mut stream = None;
    let mut via_serde = false;
    for attribute in input.attrs.iter().filter(|a| a.path().is_ident("ingest")) {
        attribute.parse_nested_meta(|meta| {
            if meta.path.is_ident("stream") {
                let value: LitStr = meta.value()?.parse()?;
                if value.value().is_empty() {
                    return Err(meta.error("the stream name must not be empty"));
                }
                if stream.replace(value).is_some() {
                    return Err(meta.error("`stream` given twice"));
                }
                Ok(())
            } else if meta.path.is_ident("serde") {
                via_serde = true;
                Ok(())
            } else {
                Err(meta.error(
                    "unknown key: `#[ingest(stream = \"...\")]` takes `stream` and, \
                     to write the JSON with the type's Serialize impl, `serde`",
                ))
            }
        })?;
    }
    let stream = stream.ok_or_else(|| {
        syn::Error::new_spanned(
            &input.ident,
            "#[derive(Ingest)] needs #[ingest(stream = \"...\")]: the stream the objects go to",
        )
    })?;
    Ok(IngestAttributes { stream, via_serde })
}

/// One serialized field: its escaped key, and the condition under which
/// it is left out (`skip_serializing_if`).
struct KeyedField {
    member: syn::Ident,
    key: String,
    skip_if: Option<syn::ExprPath>,
}

/// `fn write_json` for a struct with named fields whose serde attributes
/// this derive follows; `None` where the `Serialize` impl must write.
fn json_writer(input: &DeriveInput) -> syn::Result<Option<Tokens>> {
    let Data::Struct(data) = &input.data else {
        return Ok(None);
    };
    let Fields::Named(named) = &data.fields else {
        return Ok(None);
    };
    if input.generics.type_params().next().is_some()
        || input.generics.const_params().next().is_some()
        || is_packed(&input.attrs)
    {
        return Ok(None);
    }
    let Some(rule) = container_rule(&input.attrs) else {
        return Ok(None);
    };
    let mut fields = Vec::new();
    for field in &named.named {
        let member = field.ident.clone().expect("named fields have names");
        match field_attributes(&field.attrs) {
            None => return Ok(None),
            Some(FieldAttributes { skip: true, .. }) => {}
            Some(FieldAttributes {
                rename, skip_if, ..
            }) => {
                let key = rename.unwrap_or_else(|| rule.apply(&member.unraw().to_string()));
                fields.push(KeyedField {
                    member,
                    key: escape(&key),
                    skip_if,
                });
            }
        }
    }
    let body = if fields.iter().any(|f| f.skip_if.is_some()) {
        dynamic_body(&fields)
    } else {
        static_body(&fields)
    };
    Ok(Some(quote! {
        const DERIVED_JSON: bool = true;

        #[inline]
        // `&&Field` picks the writer by the field's type; see json.rs.
        #[allow(clippy::needless_borrow)]
        fn write_json(
            &self,
            out: &mut ::std::vec::Vec<u8>,
        ) -> ::core::result::Result<(), ::shipper::ingest::__json::Error> {
            #[allow(unused_imports)]
            use ::shipper::ingest::__json::{Fallback as _, Fast as _};
            #body
            ::core::result::Result::Ok(())
        }
    }))
}

/// Every field always written: each key with its punctuation is one
/// constant.
fn static_body(fields: &[KeyedField]) -> Tokens {
    if fields.is_empty() {
        return quote! { out.extend_from_slice(b"{}"); };
    }
    let writes = fields.iter().enumerate().map(|(index, field)| {
        let prefix = format!("{}{}:", if index == 0 { "{" } else { "," }, field.key);
        let prefix = syn::LitByteStr::new(prefix.as_bytes(), proc_macro2::Span::call_site());
        let member = &field.member;
        quote! {
            out.extend_from_slice(#prefix);
            (&&::shipper::ingest::__json::Field(&self.#member)).write_field(out)?;
        }
    });
    quote! {
        #(#writes)*
        out.push(b'}');
    }
}

/// Some field may be left out: commas are decided as the fields go.
fn dynamic_body(fields: &[KeyedField]) -> Tokens {
    let writes = fields.iter().map(|field| {
        let key = format!("{}:", field.key);
        let key = syn::LitByteStr::new(key.as_bytes(), proc_macro2::Span::call_site());
        let member = &field.member;
        let write = quote! {
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(#key);
            (&&::shipper::ingest::__json::Field(&self.#member)).write_field(out)?;
        };
        match &field.skip_if {
            Some(skip_if) => quote! { if !#skip_if(&self.#member) { #write } },
            None => write,
        }
    });
    quote! {
        out.push(b'{');
        let mut first = true;
        #(#writes)*
        let _ = first;
        out.push(b'}');
    }
}

/// serde's `rename_all` rules, as they apply to struct fields.
#[derive(Clone, Copy)]
enum RenameRule {
    None,
    Upper,
    Pascal,
    Camel,
    Kebab,
    ScreamingKebab,
}

impl RenameRule {
    fn parse(rule: &str) -> Option<RenameRule> {
        Some(match rule {
            "lowercase" | "snake_case" => RenameRule::None,
            "UPPERCASE" | "SCREAMING_SNAKE_CASE" => RenameRule::Upper,
            "PascalCase" => RenameRule::Pascal,
            "camelCase" => RenameRule::Camel,
            "kebab-case" => RenameRule::Kebab,
            "SCREAMING-KEBAB-CASE" => RenameRule::ScreamingKebab,
            _ => return None,
        })
    }

    /// serde_derive's `RenameRule::apply_to_field`.
    fn apply(self, field: &str) -> String {
        match self {
            RenameRule::None => field.to_owned(),
            RenameRule::Upper => field.to_ascii_uppercase(),
            RenameRule::Pascal => {
                let mut pascal = String::new();
                let mut capitalize = true;
                for ch in field.chars() {
                    if ch == '_' {
                        capitalize = true;
                    } else if capitalize {
                        pascal.push(ch.to_ascii_uppercase());
                        capitalize = false;
                    } else {
                        pascal.push(ch);
                    }
                }
                pascal
            }
            RenameRule::Camel => {
                let pascal = RenameRule::Pascal.apply(field);
                let mut chars = pascal.chars();
                match chars.next() {
                    Some(first) => first.to_ascii_lowercase().to_string() + chars.as_str(),
                    None => pascal,
                }
            }
            RenameRule::Kebab => field.replace('_', "-"),
            RenameRule::ScreamingKebab => field.to_ascii_uppercase().replace('_', "-"),
        }
    }
}

/// The container's `rename_all` rule, or `None` if a serde attribute on
/// the container changes its output in a way this derive does not follow
/// (or does not parse).
fn container_rule(attrs: &[syn::Attribute]) -> Option<RenameRule> {
    let mut rule = RenameRule::None;
    let mut followed = true;
    for attribute in attrs.iter().filter(|a| a.path().is_ident("serde")) {
        let parsed = attribute.parse_nested_meta(|meta| {
            if meta.path.is_ident("rename_all") {
                if let Some(name) = serialize_name(&meta)? {
                    match RenameRule::parse(&name) {
                        Some(parsed) => rule = parsed,
                        None => followed = false,
                    }
                }
                return Ok(());
            }
            // Attributes that change nothing a struct serializes to.
            const INERT: &[&str] = &[
                "rename",
                "deny_unknown_fields",
                "default",
                "bound",
                "crate",
                "from",
                "try_from",
                "expecting",
            ];
            skip_unless_inert(&meta, INERT, &mut followed)
        });
        if parsed.is_err() {
            return None;
        }
    }
    followed.then_some(rule)
}

struct FieldAttributes {
    rename: Option<String>,
    skip: bool,
    skip_if: Option<syn::ExprPath>,
}

/// A field's serde attributes, or `None` if one changes its output in a
/// way this derive does not follow (or does not parse).
fn field_attributes(attrs: &[syn::Attribute]) -> Option<FieldAttributes> {
    let mut out = FieldAttributes {
        rename: None,
        skip: false,
        skip_if: None,
    };
    let mut followed = true;
    for attribute in attrs.iter().filter(|a| a.path().is_ident("serde")) {
        let parsed = attribute.parse_nested_meta(|meta| {
            if meta.path.is_ident("rename") {
                if let Some(name) = serialize_name(&meta)? {
                    out.rename = Some(name);
                }
                Ok(())
            } else if meta.path.is_ident("skip") || meta.path.is_ident("skip_serializing") {
                out.skip = true;
                Ok(())
            } else if meta.path.is_ident("skip_serializing_if") {
                let path: LitStr = meta.value()?.parse()?;
                out.skip_if = Some(path.parse()?);
                Ok(())
            } else {
                const INERT: &[&str] = &[
                    "skip_deserializing",
                    "default",
                    "alias",
                    "deserialize_with",
                    "bound",
                    "borrow",
                ];
                skip_unless_inert(&meta, INERT, &mut followed)
            }
        });
        if parsed.is_err() {
            return None;
        }
    }
    followed.then_some(out)
}

/// `#[repr(packed)]`: its fields cannot be borrowed where they lie.
fn is_packed(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().filter(|a| a.path().is_ident("repr")).any(|a| {
        let mut packed = false;
        let _ = a.parse_nested_meta(|meta| {
            packed |= meta.path.is_ident("packed");
            skip_value(&meta)
        });
        packed
    })
}

/// The serialization side of `key = "x"` or `key(serialize = "x", ...)`.
fn serialize_name(meta: &ParseNestedMeta<'_>) -> syn::Result<Option<String>> {
    if meta.input.peek(syn::Token![=]) {
        let name: LitStr = meta.value()?.parse()?;
        return Ok(Some(name.value()));
    }
    let mut name = None;
    meta.parse_nested_meta(|inner| {
        if inner.path.is_ident("serialize") {
            let value: LitStr = inner.value()?.parse()?;
            name = Some(value.value());
            Ok(())
        } else {
            skip_value(&inner)
        }
    })?;
    Ok(name)
}

/// Consumes an attribute this derive does not act on; one that is not
/// among `inert` (it shapes the output) clears `followed`.
fn skip_unless_inert(
    meta: &ParseNestedMeta<'_>,
    inert: &[&str],
    followed: &mut bool,
) -> syn::Result<()> {
    if !inert.iter().any(|name| meta.path.is_ident(name)) {
        *followed = false;
    }
    skip_value(meta)
}

/// Consumes whatever follows a key: `= value`, `(...)` or nothing.
fn skip_value(meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
    if meta.input.peek(syn::Token![=]) {
        meta.value()?.parse::<syn::Expr>()?;
    } else if meta.input.peek(syn::token::Paren) {
        meta.parse_nested_meta(|inner| skip_value(&inner))?;
    }
    Ok(())
}

/// `key` as a JSON string, escaped as serde_json escapes it.
fn escape(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 2);
    out.push('"');
    for ch in key.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            ch if u32::from(ch) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(ch))),
            ch => out.push(ch),
        }
    }
    out.push('"');
    out
}

//! `#[derive(Ingest)]`: implements `shipper::ingest::Ingest` for a type,
//! naming its stream with `#[ingest(stream = "...")]`.
//!
//! ```ignore
//! #[derive(serde::Serialize, shipper::ingest::Ingest)]
//! #[ingest(stream = "weather")]
//! struct Reading { sensor: u32, celsius: f32 }
//! ```

use proc_macro::TokenStream;
use quote::quote;
use syn::{parse_macro_input, DeriveInput, LitStr};

/// Implements `shipper::ingest::Ingest`; the type must also implement
/// `serde::Serialize`. `#[ingest(stream = "name")]` is required: the
/// stream is the table, subject or collection the objects end up in.
#[proc_macro_derive(Ingest, attributes(ingest))]
pub fn derive_ingest(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match stream_of(&input) {
        Ok(stream) => {
            let name = &input.ident;
            let (impl_generics, type_generics, where_clause) = input.generics.split_for_impl();
            quote! {
                impl #impl_generics ::shipper::ingest::Ingest for #name #type_generics #where_clause {
                    const STREAM: &'static str = #stream;
                }
            }
            .into()
        }
        Err(error) => error.to_compile_error().into(),
    }
}

/// The `stream` of the one `#[ingest(...)]` attribute.
fn stream_of(input: &DeriveInput) -> syn::Result<LitStr> {
    let mut stream = None;
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
            } else {
                Err(meta.error("unknown key: `#[ingest(stream = \"...\")]` takes `stream`"))
            }
        })?;
    }
    stream.ok_or_else(|| {
        syn::Error::new_spanned(
            &input.ident,
            "#[derive(Ingest)] needs #[ingest(stream = \"...\")]: the stream the objects go to",
        )
    })
}

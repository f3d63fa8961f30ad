//! Property tests through the public API: framing is independent of how
//! the stream is split into reads, limits hold, and parsers never panic.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use shipper_components::framing::lines::{
    CarriageReturn, Line, LineOptions, LineSplitter, Overlong,
};
use shipper_components::framing::octet::OctetDecoder;
use shipper_components::multiline::{Joiner, JoinerOptions};
use shipper_components::parse::syslog::{parse, parse_with, to_json, write_json, ParseOptions};

type Owned = (Vec<u8>, u64, bool);

fn owned(line: Line<'_>) -> Owned {
    (line.bytes.to_vec(), line.end_offset, line.truncated)
}

/// The lines of `stream` computed from the whole of it at once, the
/// obvious way.
fn reference(stream: &[u8], options: &LineOptions) -> Vec<Owned> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut segments: Vec<(&[u8], u64)> = Vec::new();
    for (index, byte) in stream.iter().enumerate() {
        if *byte == b'\n' {
            segments.push((&stream[start..index], index as u64 + 1));
            start = index + 1;
        }
    }
    if start < stream.len() {
        segments.push((&stream[start..], stream.len() as u64));
    }
    for (mut content, end) in segments {
        if options.carriage_return == CarriageReturn::Strip {
            content = content.strip_suffix(b"\r").unwrap_or(content);
        }
        if content.len() <= options.max_line_bytes {
            out.push((content.to_vec(), end, false));
        } else if options.overlong == Overlong::Truncate {
            out.push((content[..options.max_line_bytes].to_vec(), end, true));
        }
    }
    out
}

/// Feeds `stream` cut at `cuts` (positions, any order), then finishes.
fn split_in_pieces(
    stream: &[u8],
    cuts: &[usize],
    options: LineOptions,
) -> (Vec<Owned>, LineSplitter) {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    cuts.push(0);
    cuts.push(stream.len());
    cuts.sort_unstable();
    let mut splitter = LineSplitter::new(options);
    let mut out = Vec::new();
    for window in cuts.windows(2) {
        let mut lines = splitter.feed(&stream[window[0]..window[1]]);
        while let Some(line) = lines.next() {
            out.push(owned(line));
        }
    }
    if let Some(line) = splitter.finish() {
        out.push(owned(line));
    }
    (out, splitter)
}

fn stream_bytes() -> impl Strategy<Value = Vec<u8>> {
    // Mostly short lines, with enough `\n` and `\r` to hit every edge.
    prop::collection::vec(
        prop_oneof![4 => Just(b'\n'), 2 => Just(b'\r'), 10 => any::<u8>()],
        0..400,
    )
}

fn line_options() -> impl Strategy<Value = LineOptions> {
    (
        0usize..24,
        prop_oneof![Just(Overlong::Truncate), Just(Overlong::Drop)],
        prop_oneof![Just(CarriageReturn::Strip), Just(CarriageReturn::Keep)],
    )
        .prop_map(|(max_line_bytes, overlong, carriage_return)| LineOptions {
            max_line_bytes,
            overlong,
            carriage_return,
        })
}

proptest! {
    #[test]
    fn any_split_yields_the_lines_of_the_whole(
        stream in stream_bytes(),
        cuts in prop::collection::vec(any::<usize>(), 0..40),
        options in line_options(),
    ) {
        let expected = reference(&stream, &options);
        let (whole, _) = split_in_pieces(&stream, &[], options);
        prop_assert_eq!(&whole, &expected);
        let (pieces, splitter) = split_in_pieces(&stream, &cuts, options);
        prop_assert_eq!(&pieces, &expected);
        for (bytes, _, _) in &pieces {
            prop_assert!(bytes.len() <= options.max_line_bytes);
        }
        let truncated = expected.iter().filter(|line| line.2).count() as u64;
        prop_assert_eq!(splitter.truncated_lines(), truncated);
        prop_assert_eq!(splitter.offset(), stream.len() as u64);
    }

    #[test]
    fn octet_frames_survive_any_split(
        messages in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..40), 0..20),
        cuts in prop::collection::vec(any::<usize>(), 0..40),
    ) {
        let mut stream = Vec::new();
        for message in &messages {
            stream.extend_from_slice(format!("{} ", message.len()).as_bytes());
            stream.extend_from_slice(message);
        }
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
        cuts.extend([0, stream.len()]);
        cuts.sort_unstable();
        let mut decoder = OctetDecoder::new(64);
        let mut decoded = Vec::new();
        for window in cuts.windows(2) {
            let mut frames = decoder.feed(&stream[window[0]..window[1]]);
            while let Some(frame) = frames.next() {
                decoded.push(frame.map(|f| f.bytes.to_vec()));
            }
        }
        prop_assert_eq!(decoder.finish(), Ok(()));
        let expected: Vec<_> = messages.into_iter().map(Ok).collect();
        prop_assert_eq!(decoded, expected);
    }

    #[test]
    fn octet_decoder_never_panics(stream in prop::collection::vec(any::<u8>(), 0..200), max in 0usize..32) {
        let mut decoder = OctetDecoder::new(max);
        let mut frames = decoder.feed(&stream);
        while let Some(frame) = frames.next() {
            if let Ok(frame) = frame {
                prop_assert!(frame.bytes.len() <= max);
            }
        }
    }

    #[test]
    fn syslog_parser_never_panics_on_bytes(input in prop::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(syslog) = parse(&input) {
            let _ = to_json(&syslog);
        }
    }

    #[test]
    fn syslog_parser_never_panics_on_near_valid_input(
        prefix in prop_oneof![
            Just("<13>1 "), Just("<165>1 2003-10-11T22:14:15.003Z "), Just("<13>1 - h a p m "),
            Just("<13>1 - h a p m [id "), Just("<34>Oct 11 22:14:15 "), Just("<13>"),
        ],
        tail in r#"[ -~\[\]"\\=\-\t\u{e9}\u{feff}]{0,120}"#,
        year in prop::option::of(-3000i32..12000),
        offset in -100_000i32..100_000,
    ) {
        let input = format!("{prefix}{tail}");
        let options = ParseOptions { rfc3164_year: year, rfc3164_utc_offset_seconds: offset };
        match parse_with(input.as_bytes(), &options) {
            Ok(syslog) => {
                let json = to_json(&syslog);
                prop_assert!(json.get("message").is_some());
                let mut written = Vec::new();
                write_json(&syslog, &mut written);
                let written: serde_json::Value = serde_json::from_slice(&written).expect("valid JSON");
                prop_assert_eq!(written, json);
            }
            Err(error) => prop_assert!(error.offset <= input.len()),
        }
    }

    #[test]
    fn joined_records_never_exceed_the_maximum(
        lines in prop::collection::vec("[ a-z]{0,30}", 0..60),
        max_record_bytes in 0usize..80,
    ) {
        let options = JoinerOptions { max_record_bytes, timeout: Duration::from_secs(1) };
        let mut joiner = Joiner::new("^[a-z]", options).expect("valid pattern");
        let now = Instant::now();
        let mut records = Vec::new();
        for line in &lines {
            records.extend(joiner.push(line.as_bytes(), now));
        }
        records.extend(joiner.finish());
        let pushed: usize = records.iter().map(|record| record.lines).sum();
        prop_assert_eq!(pushed, lines.len());
        for record in &records {
            prop_assert!(record.bytes.len() <= max_record_bytes);
            if !record.truncated {
                prop_assert_eq!(record.bytes.iter().filter(|&&b| b == b'\n').count() + 1, record.lines);
            }
        }
    }
}

//! Opening the inputs of a load: files or standard input, gzip and zstd
//! recognised by their magic bytes, text in any encoding `encoding_rs`
//! knows (ASCII-compatible encodings are parsed as bytes and decoded per
//! field; UTF-16 is transcoded to UTF-8 first).

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use encoding_rs::Encoding;

use crate::error::{Error, ErrorKind, Result};

/// Where rows come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file.
    File(PathBuf),
    /// Standard input.
    Stdin,
}

impl Source {
    /// `-` is standard input.
    pub fn from_arg(arg: &str) -> Self {
        if arg == "-" {
            Self::Stdin
        } else {
            Self::File(PathBuf::from(arg))
        }
    }

    /// The name used in messages (`sales.csv`, `stdin`).
    pub fn name(&self) -> String {
        match self {
            Self::File(p) => p.display().to_string(),
            Self::Stdin => "stdin".to_owned(),
        }
    }

    /// Size on disk, when known.
    pub fn size(&self) -> Option<u64> {
        match self {
            Self::File(p) => std::fs::metadata(p).ok().map(|m| m.len()),
            Self::Stdin => None,
        }
    }

    /// Where this input is: canonical path, size and modification time
    /// (standard input: nowhere).
    pub fn location(&self) -> Option<serde_json::Value> {
        let Self::File(p) = self else {
            return None;
        };
        let meta = std::fs::metadata(p).ok()?;
        let modified = meta
            .modified()
            .ok()?
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?;
        let path = std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
        Some(serde_json::json!({
            "path": path.display().to_string(),
            "size": meta.len(),
            "modified_ns": modified.as_nanos().to_string(),
        }))
    }

    /// What identifies this input in the load ledger: its size and a hash
    /// of its content (XXH3-128 of the bytes as stored), not its path or
    /// modification time, so a renamed or touched file is the same input
    /// and a file rewritten in place with the same size and time is not.
    /// Standard input has none (it cannot be resumed). Reading stops with
    /// an `Interrupted` error once `stop` is set.
    pub fn identity(&self, stop: &AtomicBool) -> io::Result<Option<serde_json::Value>> {
        let Self::File(p) = self else {
            return Ok(None);
        };
        let (size, hash, _) = content_hash(p, stop, None)?;
        Ok(Some(
            serde_json::json!({"size": size, "xxh3": format!("{hash:032x}")}),
        ))
    }

    /// The identity (as [`Source::identity`] gives it) of this file's
    /// first `len` bytes, and its last byte there; `None` when it is
    /// shorter, or standard input.
    pub fn prefix_identity(
        &self,
        len: u64,
        stop: &AtomicBool,
    ) -> io::Result<Option<(serde_json::Value, Option<u8>)>> {
        let Self::File(p) = self else {
            return Ok(None);
        };
        let (size, hash, last) = content_hash(p, stop, Some(len))?;
        Ok((size == len).then(|| {
            (
                serde_json::json!({"size": size, "xxh3": format!("{hash:032x}")}),
                last,
            )
        }))
    }

    /// This input by its canonical path alone (standard input: nowhere).
    pub fn path_identity(&self) -> Option<serde_json::Value> {
        let Self::File(p) = self else {
            return None;
        };
        let path = std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
        Some(serde_json::json!({ "path": path.display().to_string() }))
    }
}

/// Size and XXH3-128 hash of the file at `path` (of its first `limit`
/// bytes at most), read in 1 MiB blocks until `stop` is set, and the last
/// byte hashed.
fn content_hash(
    path: &Path,
    stop: &AtomicBool,
    limit: Option<u64>,
) -> io::Result<(u64, u128, Option<u8>)> {
    let file = File::open(path)?;
    let mut file = file.take(limit.unwrap_or(u64::MAX));
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    let mut last = None;
    loop {
        if stop.load(Ordering::Relaxed) {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "stopped"));
        }
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        last = Some(buf[n - 1]);
        size += n as u64;
    }
    Ok((size, hasher.digest128(), last))
}

/// The inputs named by command-line arguments: `-` is standard input; an
/// argument with `*`, `?` or `[` that names no file is a glob pattern,
/// expanded here (sorted by name; hidden files only when the pattern says
/// so) for shells, schedulers and pipeline files that pass it quoted. A
/// pattern matching nothing adds nothing.
pub fn expand_args<S: AsRef<str>>(args: &[S]) -> Result<Vec<Source>> {
    let mut sources = Vec::new();
    for arg in args {
        let arg = arg.as_ref();
        let pattern = arg.contains(['*', '?', '[']) && !Path::new(arg).exists();
        if !pattern {
            sources.push(Source::from_arg(arg));
            continue;
        }
        let options = glob::MatchOptions {
            require_literal_leading_dot: true,
            ..glob::MatchOptions::new()
        };
        let paths = glob::glob_with(arg, options)
            .map_err(|e| Error::config(format!("\"{arg}\" is not a valid file pattern: {e}")))?;
        let mut matched = Vec::new();
        for path in paths {
            let path = path
                .map_err(|e| Error::io(format!("cannot read {}", e.path().display()), e.into()))?;
            if path.is_file() {
                matched.push(path);
            }
        }
        matched.sort();
        sources.extend(matched.into_iter().map(Source::File));
    }
    Ok(sources)
}

/// Counts bytes read from the underlying file (compressed bytes, for
/// progress).
struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// How the input was compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Not compressed.
    None,
    /// gzip (one or more members).
    Gzip,
    /// Zstandard.
    Zstd,
}

/// Opens `source`: decompressed, and for encodings that are not
/// ASCII-compatible transcoded to UTF-8. Bytes read from the file or pipe
/// are added to `counter`.
pub fn open(
    source: &Source,
    encoding: &'static Encoding,
    counter: Arc<AtomicU64>,
) -> Result<(Box<dyn Read + Send>, Compression)> {
    let raw: Box<dyn Read + Send> = match source {
        Source::File(p) => Box::new(File::open(p).map_err(|e| open_error(p, e))?),
        Source::Stdin => {
            let peeked = std::mem::take(&mut *STDIN_PEEKED.lock().map_err(|_| poisoned())?);
            Box::new(io::Cursor::new(peeked).chain(io::stdin()))
        }
    };
    let mut reader = BufReader::with_capacity(
        256 * 1024,
        Counting {
            inner: raw,
            count: counter,
        },
    );
    let head = reader
        .fill_buf()
        .map_err(|e| Error::io(format!("cannot read {}", source.name()), e))?;
    let compression = if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        if let Some(what) = workbook(head) {
            return Err(Error::new(
                ErrorKind::Data,
                format!(
                    "{} is {what}, not text; pgbulk reads CSV and PostgreSQL's text format (plain, gzip or zstd) and Parquet: save the sheet as CSV (or unzip the archive) and load that",
                    source.name()
                ),
            ));
        }
        let unsupported = if head.starts_with(b"BZh") && head.get(3).is_some_and(u8::is_ascii_digit)
        {
            Some(("bzip2", "bzcat"))
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            Some(("xz", "xzcat"))
        } else {
            None
        };
        if let Some((format, tool)) = unsupported {
            let name = source.name();
            return Err(Error::new(
                ErrorKind::Data,
                format!(
                    "{name} is {format}-compressed; pgbulk reads gzip and zstd: decompress it first, e.g. `{tool} {name} | pgbulk load -`"
                ),
            ));
        }
        Compression::None
    };
    let decompressed: Box<dyn Read + Send> = match compression {
        Compression::None => Box::new(reader),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(reader)),
        Compression::Zstd => Box::new(ruzstd::decoding::StreamingDecoder::new(reader).map_err(
            |e| {
                Error::new(
                    ErrorKind::Data,
                    format!("{}: not a valid zstd stream: {e}", source.name()),
                )
            },
        )?),
    };
    let text: Box<dyn Read + Send> = if read_as_is(encoding) {
        decompressed
    } else {
        Box::new(Transcoder::new(decompressed, encoding))
    };
    Ok((text, compression))
}

/// What a file beginning with `head` is when it is a spreadsheet or an
/// archive (read as CSV, its bytes would be nonsense or "no rows"): a ZIP
/// archive (Excel's `.xlsx`, OpenDocument's `.ods`) or an OLE2 compound
/// document (Excel 97-2003's `.xls`).
fn workbook(head: &[u8]) -> Option<&'static str> {
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        Some("a ZIP archive (an Excel .xlsx or OpenDocument .ods workbook, or a .zip)")
    } else if head.starts_with(&[0xd0, 0xcf, 0x11, 0xe0, 0xa1, 0xb1, 0x1a, 0xe1]) {
        Some("an OLE2 document (an Excel 97-2003 .xls workbook)")
    } else {
        None
    }
}

/// Opens an uncompressed file at byte `offset` (a record boundary found
/// earlier), counting what is read from there into `counter`. `None` when
/// the input cannot be positioned that way (standard input, compressed, or
/// transcoded): the caller reads up to the offset instead.
pub fn open_at(
    source: &Source,
    encoding: &'static Encoding,
    counter: Arc<AtomicU64>,
    offset: u64,
) -> Result<Option<Box<dyn Read + Send>>> {
    let Source::File(path) = source else {
        return Ok(None);
    };
    if !read_as_is(encoding) {
        return Ok(None);
    }
    let (_, compression) = open(source, encoding, Arc::default())?;
    if compression != Compression::None {
        return Ok(None);
    }
    use std::io::{Seek, SeekFrom};
    let mut file = File::open(path).map_err(|e| open_error(path, e))?;
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| Error::io(format!("cannot seek in {}", path.display()), e))?;
    Ok(Some(Box::new(BufReader::with_capacity(
        256 * 1024,
        Counting {
            inner: file,
            count: counter,
        },
    ))))
}

/// Bytes of standard input read ahead by [`peek_stdin`], given back to
/// the first [`open`] of standard input.
static STDIN_PEEKED: Mutex<Vec<u8>> = Mutex::new(Vec::new());

fn poisoned() -> Error {
    Error::new(ErrorKind::Io, "standard input buffer poisoned")
}

/// Reads up to `max` bytes of standard input ahead (fewer at its end) and
/// returns them; the next [`open`] of standard input reads them again.
pub fn peek_stdin(max: usize) -> Result<Vec<u8>> {
    let mut peeked = STDIN_PEEKED.lock().map_err(|_| poisoned())?;
    let mut stdin = io::stdin().lock();
    let mut chunk = vec![0; 64 * 1024];
    while peeked.len() < max {
        let want = (max - peeked.len()).min(chunk.len());
        match stdin.read(&mut chunk[..want]) {
            Ok(0) => break,
            Ok(n) => peeked.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("cannot read standard input", e)),
        }
    }
    Ok(peeked.clone())
}

/// Up to `max` bytes of `source`'s text as [`open`] delivers it
/// (decompressed, transcoded), for sniffing its dialect. Standard input
/// is peeked, not consumed. A stream cut short by `max` is not an error.
pub fn head(source: &Source, encoding: &'static Encoding, max: usize) -> Result<Vec<u8>> {
    let mut text = Vec::new();
    let reader: Box<dyn Read + Send> = match source {
        Source::File(_) => open(source, encoding, Arc::default())?.0,
        Source::Stdin => {
            // Decompress what was peeked, not standard input itself.
            let peeked = peek_stdin(max)?;
            let mut reader = BufReader::new(io::Cursor::new(peeked));
            let head = reader
                .fill_buf()
                .map_err(|e| Error::io("cannot read standard input", e))?;
            let decompressed: Box<dyn Read + Send> = if head.starts_with(&[0x1f, 0x8b]) {
                Box::new(flate2::read::MultiGzDecoder::new(reader))
            } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
                match ruzstd::decoding::StreamingDecoder::new(reader) {
                    Ok(d) => Box::new(d),
                    Err(_) => return Ok(text),
                }
            } else {
                Box::new(reader)
            };
            if read_as_is(encoding) {
                decompressed
            } else {
                Box::new(Transcoder::new(decompressed, encoding))
            }
        }
    };
    let mut limited = reader.take(max as u64);
    let mut chunk = vec![0; 64 * 1024];
    loop {
        match limited.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => text.extend_from_slice(&chunk[..n]),
        }
    }
    Ok(text)
}

fn open_error(path: &Path, e: io::Error) -> Error {
    Error::io(format!("cannot open {}", path.display()), e)
}

/// Looks an encoding up by any of its WHATWG labels (`utf-8`, `latin1`,
/// `windows-1252`, `utf-16le`, ...) or PostgreSQL's `UTF8`, `LATIN1` and
/// `WIN1252`. A label naming ISO-8859-1 (`latin1`, `iso-8859-1`, ...) is
/// ISO-8859-1 as PostgreSQL reads it, every byte the character of the same
/// number, not windows-1252 as WHATWG would have it (byte 0x80 is U+0080,
/// not `€`); it is carried as [`LATIN1`]. Likewise a label naming
/// ISO-8859-9 (`latin5`, `iso-8859-9`, ...) is PostgreSQL's `LATIN5`, not
/// windows-1254, carried as [`LATIN5`].
pub fn encoding(label: &str) -> Result<&'static Encoding> {
    let label = label.trim();
    let found = match label.to_ascii_lowercase().as_str() {
        "windows-1252" | "cp1252" | "x-cp1252" | "win1252" => Some(encoding_rs::WINDOWS_1252),
        "windows-1254" | "cp1254" | "x-cp1254" | "win1254" => Some(encoding_rs::WINDOWS_1254),
        _ => match Encoding::for_label(label.as_bytes()) {
            // Every other label WHATWG reads as windows-1252 names
            // ISO-8859-1 (or ASCII, its subset), as windows-1254
            // ISO-8859-9.
            Some(e) if e == encoding_rs::WINDOWS_1252 => Some(LATIN1),
            Some(e) if e == encoding_rs::WINDOWS_1254 => Some(LATIN5),
            // ISO-8859-8-I decodes as ISO-8859-8 (the I is about the
            // direction text is shown in); its carrier is LATIN5's.
            Some(e) if e == encoding_rs::ISO_8859_8_I => Some(encoding_rs::ISO_8859_8),
            other => other,
        },
    };
    match (found, postgres_encoding(label)) {
        (Some(found), _) => Ok(found),
        (None, Some(Ok(whatwg))) => encoding(whatwg),
        (None, Some(Err(whatwg))) => Err(Error::config(format!(
            "PostgreSQL's encoding {} is not read here exactly as the server reads it: \
             --encoding {whatwg} reads it as WHATWG does, which also takes byte sequences \
             the server refuses (user-defined and vendor areas); or convert the file to \
             UTF-8 first",
            label.to_ascii_uppercase()
        ))),
        (None, None) => Err(Error::config(format!(
            "unknown encoding \"{label}\" (try utf-8, latin1, windows-1252, utf-16le, utf-16be, \
             shift_jis, or PostgreSQL's names: WIN1251, LATIN9, KOI8R, ...)"
        ))),
    }
}

/// For a PostgreSQL name of an encoding that is no WHATWG label
/// (`WIN1251`, `LATIN9`, `KOI8R`, `ISO_8859_5`, ..., and the aliases the
/// server takes: `alt`, `koi8`, `win`, `tcvn`, ...): the WHATWG label of
/// the same single-byte table (`Ok`, checked byte by byte against the
/// server), or of the WHATWG multi-byte decoder, which reads more than
/// the server does (`Err`). Case and characters other than letters and
/// digits are ignored, as the server ignores them.
fn postgres_encoding(label: &str) -> Option<std::result::Result<&'static str, &'static str>> {
    let name: String = label
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    Some(match name.as_str() {
        "latin2" => Ok("iso-8859-2"),
        "latin3" => Ok("iso-8859-3"),
        "latin4" => Ok("iso-8859-4"),
        "latin6" => Ok("iso-8859-10"),
        "latin7" => Ok("iso-8859-13"),
        "latin8" => Ok("iso-8859-14"),
        "latin9" => Ok("iso-8859-15"),
        "latin10" => Ok("iso-8859-16"),
        "iso88595" => Ok("iso-8859-5"),
        "iso88596" => Ok("iso-8859-6"),
        "iso88597" => Ok("iso-8859-7"),
        "iso88598" => Ok("iso-8859-8"),
        "win866" | "alt" => Ok("ibm866"),
        "win874" => Ok("windows-874"),
        "win1250" => Ok("windows-1250"),
        "win1251" | "win" => Ok("windows-1251"),
        "win1253" => Ok("windows-1253"),
        "win1255" => Ok("windows-1255"),
        "win1256" => Ok("windows-1256"),
        "win1257" => Ok("windows-1257"),
        "win1258" | "abc" | "tcvn" | "tcvn5712" | "vscii" => Ok("windows-1258"),
        "koi8r" | "koi8" => Ok("koi8-r"),
        "koi8u" => Ok("koi8-u"),
        "unicode" => Ok("utf-8"),
        "sjis" | "mskanji" | "shiftjis" => Err("shift_jis"),
        "big5" => Err("big5"),
        "gbk" => Err("gbk"),
        "gb18030" => Err("gb18030"),
        "eucjp" => Err("euc-jp"),
        "euckr" | "uhc" => Err("euc-kr"),
        _ => return None,
    })
}

/// ISO-8859-1, which `encoding_rs` does not have: carried by
/// `x-user-defined` (a label no file is written in), decoded by
/// [`decode_field`] byte for character and named by [`encoding_name`].
pub const LATIN1: &Encoding = encoding_rs::X_USER_DEFINED;

/// ISO-8859-9, which `encoding_rs` reads as windows-1254: carried by
/// `ISO-8859-8-I` (which [`encoding`] reads as ISO-8859-8, the same
/// bytes), decoded by [`decode_field`] and named by [`encoding_name`].
pub const LATIN5: &Encoding = encoding_rs::ISO_8859_8_I;

/// The name of an encoding [`encoding`] returned.
pub fn encoding_name(encoding: &'static Encoding) -> &'static str {
    if encoding == LATIN1 {
        "ISO-8859-1"
    } else if encoding == LATIN5 {
        "ISO-8859-9"
    } else {
        encoding.name()
    }
}

/// Where PostgreSQL reads a single-byte encoding otherwise than the
/// table pgbulk decodes it with (found byte by byte against the server's
/// COPY). One byte is one character, so a character's place is its byte's.
struct Differences {
    /// Decoded as ISO-8859-1 is: each byte the character of its number.
    latin1: bool,
    /// The characters U+0080..U+009F are refused: the bytes a Windows code
    /// page leaves undefined, which WHATWG reads as C1 controls and
    /// PostgreSQL's WIN874 and WIN125x refuse.
    refuse_c1: bool,
    /// Bytes read otherwise: as this character, or refused (`None`).
    bytes: &'static [(u8, Option<char>)],
}

/// The [`Differences`] of an ASCII-compatible `encoding` other than UTF-8.
fn differences(encoding: &'static Encoding) -> Differences {
    let (latin1, refuse_c1, bytes): (bool, bool, &[(u8, Option<char>)]) = if encoding == LATIN1 {
        (true, false, &[])
    } else if encoding == LATIN5 {
        // ISO-8859-9: ISO-8859-1 but for six Turkish letters in place of
        // Icelandic ones.
        (
            true,
            false,
            &[
                (0xd0, Some('\u{11e}')),
                (0xdd, Some('\u{130}')),
                (0xde, Some('\u{15e}')),
                (0xf0, Some('\u{11f}')),
                (0xfd, Some('\u{131}')),
                (0xfe, Some('\u{15f}')),
            ],
        )
    } else if encoding == encoding_rs::KOI8_U {
        // Box drawings, where WHATWG's KOI8-U has the Belarusian short u.
        (
            false,
            false,
            &[(0xae, Some('\u{255d}')), (0xbe, Some('\u{256c}'))],
        )
    } else if encoding == encoding_rs::WINDOWS_1255 {
        // 0xCA: a character windows-1255 has gained since PostgreSQL's
        // table was made.
        (false, true, &[(0xca, None)])
    } else {
        (false, encoding.name().starts_with("windows-"), &[])
    };
    Differences {
        latin1,
        refuse_c1,
        bytes,
    }
}

/// Whether an input in `encoding` is parsed in its own bytes, each field
/// decoded on its own: an ASCII-compatible encoding in which no byte of a
/// multi-byte character is ASCII (UTF-8, EUC-JP, the single-byte ones).
/// Shift_JIS, Big5, GBK, gb18030 and EUC-KR (read as UHC) put ASCII bytes
/// inside characters (Shift_JIS's `表` is 0x95 0x5C, a backslash; `怖`
/// 0x95 0x7C, a `|`), which PostgreSQL's COPY reads as part of the
/// character: such an input is transcoded to UTF-8 before it is parsed,
/// as UTF-16 is.
pub fn read_as_is(encoding: &'static Encoding) -> bool {
    encoding.is_ascii_compatible()
        && ![
            encoding_rs::SHIFT_JIS,
            encoding_rs::BIG5,
            encoding_rs::GBK,
            encoding_rs::GB18030,
            encoding_rs::EUC_KR,
        ]
        .contains(&encoding)
}

/// The encoding fields are in once [`open`] has run: the input's own when
/// it is read as it is ([`read_as_is`]), else UTF-8 (it was transcoded).
pub fn field_encoding(encoding: &'static Encoding) -> &'static Encoding {
    if read_as_is(encoding) {
        encoding
    } else {
        encoding_rs::UTF_8
    }
}

/// What is wrong with a field [`decode_field`] refused at byte `at`: the
/// bytes there and, reading UTF-8 (the default), how to read another
/// encoding.
pub(crate) fn undecodable(bytes: &[u8], at: usize, encoding: &'static Encoding) -> String {
    let shown: Vec<String> = bytes
        .get(at..)
        .unwrap_or_default()
        .iter()
        .take(4)
        .map(|b| format!("0x{b:02x}"))
        .collect();
    let hint = if encoding == encoding_rs::UTF_8 {
        "; an input in another encoding is read with --encoding NAME (windows-1252, latin1, ...)"
    } else {
        ""
    };
    format!(
        "undecodable byte sequence for encoding {} at byte {at} of the field ({}){hint}",
        encoding_name(encoding),
        shown.join(" ")
    )
}

/// Decodes one field from an ASCII-compatible `encoding` into UTF-8.
/// `Err(offset)` gives the byte offset of the first undecodable sequence.
pub fn decode_field<'a>(
    bytes: &'a [u8],
    encoding: &'static Encoding,
    scratch: &'a mut String,
) -> std::result::Result<&'a str, usize> {
    if encoding == encoding_rs::UTF_8 {
        return std::str::from_utf8(bytes).map_err(|e| e.valid_up_to());
    }
    if bytes.is_ascii() {
        return std::str::from_utf8(bytes).map_err(|e| e.valid_up_to());
    }
    let differences = differences(encoding);
    let differs = |b: u8| differences.bytes.iter().find(|(at, _)| *at == b);
    scratch.clear();
    if differences.latin1 {
        scratch.reserve(bytes.len() * 2);
        for (at, &b) in bytes.iter().enumerate() {
            match differs(b) {
                Some((_, Some(c))) => scratch.push(*c),
                Some((_, None)) => return Err(at),
                None => scratch.push(char::from(b)),
            }
        }
        return Ok(scratch.as_str());
    }
    let mut decoder = encoding.new_decoder_without_bom_handling();
    scratch.reserve(bytes.len() * 3);
    let (result, read) = decoder.decode_to_string_without_replacement(bytes, scratch, true);
    match result {
        encoding_rs::DecoderResult::InputEmpty => {}
        encoding_rs::DecoderResult::Malformed(bad, _) => {
            return Err(read.saturating_sub(usize::from(bad)));
        }
        encoding_rs::DecoderResult::OutputFull => return Err(read),
    }
    let refused = |c: char| differences.refuse_c1 && ('\u{80}'..='\u{9f}').contains(&c);
    // Only single-byte encodings have differences: a multi-byte one's
    // characters are not its bytes, and it is not scanned.
    let differ = differences.refuse_c1 || !differences.bytes.is_empty();
    let fixed = differ
        && scratch
            .chars()
            .zip(bytes)
            .any(|(c, &b)| refused(c) || differs(b).is_some());
    if fixed {
        let mut text = String::with_capacity(scratch.len());
        for (at, (c, &b)) in scratch.chars().zip(bytes).enumerate() {
            match differs(b) {
                Some((_, Some(other))) => text.push(*other),
                Some((_, None)) => return Err(at),
                None if refused(c) => return Err(at),
                None => text.push(c),
            }
        }
        *scratch = text;
    }
    Ok(scratch.as_str())
}

/// Transcodes an input not read as it is (UTF-16, Shift_JIS, ..., see
/// [`read_as_is`]) to UTF-8 as it reads; an undecodable sequence is a read
/// error naming its line and byte offset.
struct Transcoder {
    inner: Box<dyn Read + Send>,
    decoder: encoding_rs::Decoder,
    input: Vec<u8>,
    output: String,
    out_pos: usize,
    consumed: u64,
    /// Line ends decoded so far.
    lines: u64,
    done: bool,
}

impl Transcoder {
    fn new(inner: Box<dyn Read + Send>, encoding: &'static Encoding) -> Self {
        Self {
            inner,
            decoder: encoding.new_decoder_with_bom_removal(),
            input: vec![0; 64 * 1024],
            output: String::with_capacity(192 * 1024),
            out_pos: 0,
            consumed: 0,
            lines: 0,
            done: false,
        }
    }
}

impl Read for Transcoder {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.out_pos == self.output.len() {
            if self.done {
                return Ok(0);
            }
            let n = self.inner.read(&mut self.input)?;
            let last = n == 0;
            self.output.clear();
            self.out_pos = 0;
            // Room for the worst case, so that the decoder never stops
            // for want of it (one byte of gb18030 is three of UTF-8).
            let room = self
                .decoder
                .max_utf8_buffer_length_without_replacement(n)
                .unwrap_or(n.saturating_mul(4));
            self.output.reserve(room);
            let (result, read) = self.decoder.decode_to_string_without_replacement(
                &self.input[..n],
                &mut self.output,
                last,
            );
            let ends = memchr::memchr_iter(b'\n', self.output.as_bytes()).count() as u64;
            match result {
                encoding_rs::DecoderResult::InputEmpty => {}
                encoding_rs::DecoderResult::Malformed(bad, _) => {
                    let at = self.consumed + read as u64 - u64::from(bad);
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "line {}, byte {at} of the input: undecodable byte sequence for \
                             encoding {}",
                            self.lines + ends + 1,
                            self.decoder.encoding().name()
                        ),
                    ));
                }
                encoding_rs::DecoderResult::OutputFull => {
                    return Err(io::Error::other(format!(
                        "transcoding ran out of room at byte {} of the input",
                        self.consumed
                    )));
                }
            }
            self.lines += ends;
            self.consumed += read as u64;
            self.done = last;
        }
        let bytes = &self.output.as_bytes()[self.out_pos..];
        let n = bytes.len().min(buf.len());
        buf[..n].copy_from_slice(&bytes[..n]);
        self.out_pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_fields() {
        let mut scratch = String::new();
        assert_eq!(
            decode_field(b"caf\xc3\xa9", encoding_rs::UTF_8, &mut scratch),
            Ok("café")
        );
        assert_eq!(
            decode_field(b"ab\xff", encoding_rs::UTF_8, &mut scratch),
            Err(2)
        );
        let latin1 = encoding("latin1").expect("latin1");
        assert_eq!(decode_field(b"caf\xe9", latin1, &mut scratch), Ok("café"));
        assert!(encoding("klingon").is_err());
        // ISO-8859-1 as PostgreSQL reads it, windows-1252 only by its names.
        for label in ["latin1", "ISO-8859-1", "l1", "LATIN1", "iso8859-1"] {
            let e = encoding(label).expect("latin1");
            assert_eq!(encoding_name(e), "ISO-8859-1");
            let all: Vec<u8> = (0x80..=0xff).collect();
            let want: String = (0x80..=0xffu32).filter_map(char::from_u32).collect();
            assert_eq!(decode_field(&all, e, &mut scratch), Ok(want.as_str()));
        }
        for label in ["windows-1252", "WIN1252", "cp1252"] {
            let e = encoding(label).expect("windows-1252");
            assert_eq!(decode_field(b"\x80", e, &mut scratch), Ok("€"));
            assert_eq!(decode_field(b"ab\x81", e, &mut scratch), Err(2));
        }
        assert_eq!(encoding("UTF8").expect("utf8"), encoding_rs::UTF_8);
        // ISO-8859-9 as PostgreSQL's LATIN5, windows-1254 by its names.
        for label in ["latin5", "ISO-8859-9", "l5", "LATIN5"] {
            let e = encoding(label).expect("latin5");
            assert_eq!(encoding_name(e), "ISO-8859-9");
            assert_eq!(
                decode_field(b"\x80\xd0\xe9", e, &mut scratch),
                Ok("\u{80}Ğé")
            );
        }
        for label in ["windows-1254", "WIN1254"] {
            let e = encoding(label).expect("windows-1254");
            assert_eq!(decode_field(b"\x80\xd0", e, &mut scratch), Ok("€Ğ"));
        }
        // PostgreSQL's names of the single-byte tables, spelt any way the
        // server takes them.
        for (pg, whatwg) in [
            ("WIN1251", "windows-1251"),
            ("win", "windows-1251"),
            ("LATIN9", "iso-8859-15"),
            ("latin_10", "iso-8859-16"),
            ("KOI8R", "koi8-r"),
            ("ISO_8859_5", "iso-8859-5"),
            ("WIN866", "ibm866"),
            ("TCVN", "windows-1258"),
        ] {
            assert_eq!(encoding(pg).expect(pg), encoding(whatwg).expect(whatwg));
        }
        // Multi-byte ones are read as WHATWG reads them, which takes more
        // than the server: asked for by PostgreSQL's name, that is said.
        for pg in ["EUC_JP", "UHC", "mskanji"] {
            let refused = encoding(pg).unwrap_err().to_string();
            assert!(refused.contains("reads it as WHATWG does"), "{refused}");
        }
        assert!(encoding("shift_jis").is_ok());
        let hebrew = encoding("iso-8859-8-i").expect("iso-8859-8-i");
        assert_eq!(hebrew, encoding_rs::ISO_8859_8);
    }

    #[test]
    fn transcodes_utf16() {
        let mut bytes = vec![0xff, 0xfe];
        for u in "a,ü\n".encode_utf16() {
            bytes.extend_from_slice(&u.to_le_bytes());
        }
        let mut t = Transcoder::new(Box::new(io::Cursor::new(bytes)), encoding_rs::UTF_16LE);
        let mut out = String::new();
        t.read_to_string(&mut out).expect("decodes");
        assert_eq!(out, "a,ü\n");
        let bad = vec![0x00, 0xd8, 0x41, 0x00];
        let mut t = Transcoder::new(Box::new(io::Cursor::new(bad)), encoding_rs::UTF_16LE);
        let err = t.read_to_string(&mut out).unwrap_err();
        assert!(err.to_string().contains("undecodable"), "{err}");
    }

    /// Shift_JIS's `表` ends in 0x5C, a backslash, and `怖` in 0x7C, a
    /// `|`: the input is transcoded before it is parsed. 64 KiB of
    /// half-width katakana (a byte each, three in UTF-8) come out whole.
    #[test]
    fn transcodes_encodings_with_ascii_inside_characters() {
        let sjis = encoding("shift_jis").expect("shift_jis");
        assert!(!read_as_is(sjis));
        assert!(read_as_is(encoding("euc-jp").expect("euc-jp")));
        assert!(read_as_is(encoding("windows-1251").expect("windows-1251")));
        let mut bytes = b"x\x95\x5cy\t\x95\x7c\n".to_vec();
        bytes.extend(std::iter::repeat_n(0xb1, 70_000));
        bytes.push(b'\n');
        let mut t = Transcoder::new(Box::new(io::Cursor::new(bytes.clone())), sjis);
        let mut out = Vec::new();
        t.read_to_end(&mut out).expect("decodes");
        let text = String::from_utf8(out).expect("utf-8");
        assert!(text.starts_with("x表y\t怖\n"), "{}", &text[..12]);
        assert_eq!(text.matches('ｱ').count(), 70_000);
        // An undecodable sequence names its line, counted across reads.
        bytes.extend_from_slice(b"\x81\x20");
        let mut t = Transcoder::new(Box::new(io::Cursor::new(bytes)), sjis);
        let err = t.read_to_end(&mut Vec::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 3, byte 70009 of the input: undecodable byte sequence for encoding Shift_JIS"
        );
    }
}

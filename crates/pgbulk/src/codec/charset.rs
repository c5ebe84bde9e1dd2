//! A database encoding other than UTF-8: which characters it has. The
//! server converts every text value from the client's UTF-8 into it, and a
//! character it lacks fails the whole COPY, unlocated; known here, such a
//! value is a bad row named by its line and column.

use encoding_rs::{EncoderResult, Encoding};

/// A server encoding whose characters the client can tell exactly, or by a
/// superset (never refusing a character the server converts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Charset {
    /// PostgreSQL's name of it (`LATIN1`, `WIN1252`).
    name: &'static str,
    /// `None`: ISO 8859-1, every code point up to U+00FF.
    table: Option<&'static Encoding>,
}

impl Charset {
    /// The charset of `server_encoding`; `None` for UTF-8, `SQL_ASCII`
    /// (which takes any bytes) and encodings told here by no table
    /// (the multi-byte ones of East Asia, `LATIN5`): the server decides.
    pub fn of_server_encoding(server_encoding: &str) -> Option<Self> {
        use encoding_rs as e;
        let (name, table): (&'static str, Option<&'static Encoding>) =
            match server_encoding.to_ascii_uppercase().as_str() {
                "LATIN1" => ("LATIN1", None),
                "LATIN2" => ("LATIN2", Some(e::ISO_8859_2)),
                "LATIN3" => ("LATIN3", Some(e::ISO_8859_3)),
                "LATIN4" => ("LATIN4", Some(e::ISO_8859_4)),
                "LATIN6" => ("LATIN6", Some(e::ISO_8859_10)),
                "LATIN7" => ("LATIN7", Some(e::ISO_8859_13)),
                "LATIN8" => ("LATIN8", Some(e::ISO_8859_14)),
                "LATIN9" => ("LATIN9", Some(e::ISO_8859_15)),
                "LATIN10" => ("LATIN10", Some(e::ISO_8859_16)),
                "ISO_8859_5" => ("ISO_8859_5", Some(e::ISO_8859_5)),
                "ISO_8859_6" => ("ISO_8859_6", Some(e::ISO_8859_6)),
                "ISO_8859_7" => ("ISO_8859_7", Some(e::ISO_8859_7)),
                "ISO_8859_8" => ("ISO_8859_8", Some(e::ISO_8859_8)),
                "WIN1250" => ("WIN1250", Some(e::WINDOWS_1250)),
                "WIN1251" => ("WIN1251", Some(e::WINDOWS_1251)),
                "WIN1252" => ("WIN1252", Some(e::WINDOWS_1252)),
                "WIN1253" => ("WIN1253", Some(e::WINDOWS_1253)),
                "WIN1254" => ("WIN1254", Some(e::WINDOWS_1254)),
                "WIN1255" => ("WIN1255", Some(e::WINDOWS_1255)),
                "WIN1256" => ("WIN1256", Some(e::WINDOWS_1256)),
                "WIN1257" => ("WIN1257", Some(e::WINDOWS_1257)),
                "WIN1258" => ("WIN1258", Some(e::WINDOWS_1258)),
                "WIN866" => ("WIN866", Some(e::IBM866)),
                "WIN874" => ("WIN874", Some(e::WINDOWS_874)),
                "KOI8R" => ("KOI8R", Some(e::KOI8_R)),
                "KOI8U" => ("KOI8U", Some(e::KOI8_U)),
                _ => return None,
            };
        Some(Self { name, table })
    }

    /// PostgreSQL's name of the encoding.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The first character of `text` the encoding lacks.
    pub fn first_missing(&self, text: &str) -> Option<char> {
        if text.is_ascii() {
            return None;
        }
        let Some(table) = self.table else {
            return text.chars().find(|c| u32::from(*c) > 0xFF);
        };
        let mut encoder = table.new_encoder();
        let mut out = [0u8; 256];
        let mut rest = text;
        loop {
            let (result, read, _) =
                encoder.encode_from_utf8_without_replacement(rest, &mut out, true);
            rest = &rest[read..];
            match result {
                EncoderResult::InputEmpty => return None,
                EncoderResult::OutputFull => {}
                EncoderResult::Unmappable(c) => return Some(c),
            }
        }
    }

    /// The message for `c`, missing from the encoding: the server's words,
    /// with the character.
    pub fn missing_message(&self, c: char) -> String {
        let mut utf8 = [0u8; 4];
        let bytes: Vec<String> = c
            .encode_utf8(&mut utf8)
            .bytes()
            .map(|b| format!("0x{b:02x}"))
            .collect();
        format!(
            "character \"{c}\" (byte sequence {} in encoding \"UTF8\") has no equivalent in encoding \"{}\"",
            bytes.join(" "),
            self.name
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn characters_an_encoding_lacks_are_found() {
        let latin1 = Charset::of_server_encoding("LATIN1").expect("latin1");
        assert_eq!(latin1.first_missing("Müller ÿ\u{80}"), None);
        assert_eq!(latin1.first_missing("Straße 日本"), Some('日'));
        assert_eq!(latin1.first_missing("€"), Some('€'));
        let win1252 = Charset::of_server_encoding("win1252").expect("win1252");
        assert_eq!(win1252.first_missing("€ Œ é"), None);
        assert_eq!(win1252.first_missing("ok ż"), Some('ż'));
        let koi8 = Charset::of_server_encoding("KOI8R").expect("koi8r");
        assert_eq!(koi8.first_missing("Привет"), None);
        assert_eq!(koi8.first_missing("Привет é"), Some('é'));
        // Long text crosses the encoder's output buffer.
        let latin2 = Charset::of_server_encoding("LATIN2").expect("latin2");
        assert_eq!(
            latin2.first_missing(&format!("{}ñ", "žé".repeat(500))),
            Some('ñ')
        );
        assert_eq!(latin2.first_missing(&"žé".repeat(500)), None);
        for told_by_none in ["UTF8", "SQL_ASCII", "EUC_JP", "LATIN5", "MULE_INTERNAL"] {
            assert_eq!(Charset::of_server_encoding(told_by_none), None);
        }
        assert_eq!(
            latin1.missing_message('日'),
            "character \"日\" (byte sequence 0xe6 0x97 0xa5 in encoding \"UTF8\") has no equivalent in encoding \"LATIN1\""
        );
    }
}

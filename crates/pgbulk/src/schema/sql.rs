//! Just enough of PostgreSQL's lexical rules to split DDL into statements
//! and find the relation names in them: quoted identifiers, string and
//! dollar-quoted literals, comments.

/// A token and where it is in the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token {
    pub(crate) kind: TokenKind,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TokenKind {
    /// An identifier or keyword; unquoted ones are folded to lower case.
    Ident { name: String, quoted: bool },
    /// A string, dollar-quoted string or number.
    Literal,
    /// One punctuation character.
    Punct(char),
}

impl Token {
    /// The unquoted, lower-cased word, if this is an unquoted identifier.
    pub(crate) fn keyword(&self) -> Option<&str> {
        match &self.kind {
            TokenKind::Ident {
                name,
                quoted: false,
            } => Some(name),
            _ => None,
        }
    }

    pub(crate) fn is_keyword(&self, word: &str) -> bool {
        self.keyword() == Some(word)
    }

    pub(crate) fn is_punct(&self, c: char) -> bool {
        self.kind == TokenKind::Punct(c)
    }

    pub(crate) fn ident(&self) -> Option<&str> {
        match &self.kind {
            TokenKind::Ident { name, .. } => Some(name),
            _ => None,
        }
    }
}

/// Tokenizes `sql`. Errors name the byte offset of an unterminated literal,
/// quoted identifier or comment.
pub(crate) fn tokenize(sql: &str) -> Result<Vec<Token>, String> {
    let bytes = sql.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    let unterminated = |what: &str, at: usize| {
        let line = sql[..at].matches('\n').count() + 1;
        format!("unterminated {what} starting on line {line}")
    };
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'-' && bytes.get(i + 1) == Some(&b'-') {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
        } else if c == b'/' && bytes.get(i + 1) == Some(&b'*') {
            let mut depth = 0;
            loop {
                if i + 1 >= bytes.len() {
                    return Err(unterminated("comment", start));
                }
                if bytes[i] == b'/' && bytes[i + 1] == b'*' {
                    depth += 1;
                    i += 2;
                } else if bytes[i] == b'*' && bytes[i + 1] == b'/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == b'"' {
            let mut name = String::new();
            i += 1;
            loop {
                match bytes.get(i) {
                    None => return Err(unterminated("quoted identifier", start)),
                    Some(b'"') if bytes.get(i + 1) == Some(&b'"') => {
                        name.push('"');
                        i += 2;
                    }
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(_) => {
                        let ch = sql[i..].chars().next().unwrap_or('\u{fffd}');
                        name.push(ch);
                        i += ch.len_utf8();
                    }
                }
            }
            tokens.push(Token {
                kind: TokenKind::Ident { name, quoted: true },
                start,
                end: i,
            });
        } else if c == b'\'' || ((c == b'E' || c == b'e') && bytes.get(i + 1) == Some(&b'\'')) {
            let escapes = c != b'\'';
            i += if escapes { 2 } else { 1 };
            loop {
                match bytes.get(i) {
                    None => return Err(unterminated("string literal", start)),
                    Some(b'\\') if escapes => i += 2,
                    Some(b'\'') if bytes.get(i + 1) == Some(&b'\'') => i += 2,
                    Some(b'\'') => {
                        i += 1;
                        break;
                    }
                    Some(_) => i += 1,
                }
            }
            tokens.push(Token {
                kind: TokenKind::Literal,
                start,
                end: i,
            });
        } else if c == b'$' && dollar_tag(&sql[i..]).is_some() {
            let tag = dollar_tag(&sql[i..]).unwrap_or("$$");
            let body_start = i + tag.len();
            let close = sql[body_start..]
                .find(tag)
                .ok_or_else(|| unterminated("dollar-quoted string", start))?;
            i = body_start + close + tag.len();
            tokens.push(Token {
                kind: TokenKind::Literal,
                start,
                end: i,
            });
        } else if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 {
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric()
                    || bytes[i] == b'_'
                    || bytes[i] == b'$'
                    || bytes[i] >= 0x80)
            {
                i += 1;
            }
            tokens.push(Token {
                kind: TokenKind::Ident {
                    name: sql[start..i].to_lowercase(),
                    quoted: false,
                },
                start,
                end: i,
            });
        } else if c.is_ascii_digit() {
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'.') {
                i += 1;
            }
            tokens.push(Token {
                kind: TokenKind::Literal,
                start,
                end: i,
            });
        } else {
            let ch = sql[i..].chars().next().unwrap_or('?');
            i += ch.len_utf8();
            tokens.push(Token {
                kind: TokenKind::Punct(ch),
                start,
                end: i,
            });
        }
    }
    Ok(tokens)
}

/// `$tag$` at the start of `s`, if it opens a dollar-quoted string.
fn dollar_tag(s: &str) -> Option<&str> {
    let rest = &s[1..];
    let end = rest.find('$')?;
    let tag = &rest[..end];
    let valid = tag.is_empty()
        || (tag
            .chars()
            .next()
            .is_some_and(|c| c.is_alphabetic() || c == '_')
            && tag.chars().all(|c| c.is_alphanumeric() || c == '_'));
    valid.then(|| &s[..end + 2])
}

/// Splits tokens into statements at top-level semicolons.
pub(crate) fn statements(tokens: &[Token]) -> Vec<&[Token]> {
    tokens
        .split(|t| t.is_punct(';'))
        .filter(|s| !s.is_empty())
        .collect()
}

/// Quotes an identifier for SQL, always.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a string literal for SQL.
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// `text` as a dollar-quoted literal, its tag chosen not to occur in it
/// (so any text, whatever the session's `standard_conforming_strings`).
pub fn dollar_quote(text: &str) -> String {
    let tag = (0..)
        .map(|n| format!("$pgbulk{n}$"))
        .find(|tag| !text.contains(tag.as_str()))
        .unwrap_or_default();
    format!("{tag}{text}{tag}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollar_quotes_pick_a_tag_the_text_lacks() {
        assert_eq!(dollar_quote("a'b\\c"), "$pgbulk0$a'b\\c$pgbulk0$");
        assert_eq!(
            dollar_quote("x $pgbulk0$ y"),
            "$pgbulk1$x $pgbulk0$ y$pgbulk1$"
        );
    }

    fn idents(sql: &str) -> Vec<String> {
        tokenize(sql)
            .expect("tokenizes")
            .iter()
            .filter_map(|t| t.ident().map(str::to_owned))
            .collect()
    }

    #[test]
    fn identifiers_fold_unless_quoted() {
        assert_eq!(
            idents("CREATE TABLE \"My \"\"Odd\"\" 🐘\".Sales (Id int)"),
            ["create", "table", "My \"Odd\" 🐘", "sales", "id", "int"]
        );
    }

    #[test]
    fn literals_and_comments_hide_semicolons() {
        let sql = "COMMENT ON TABLE t IS 'a; b'; -- x; y\n/* nested /* ; */ */ SELECT $f$;$f$; SELECT E'\\';'";
        let tokens = tokenize(sql).expect("tokenizes");
        assert_eq!(statements(&tokens).len(), 3);
    }

    #[test]
    fn unterminated_things_are_errors() {
        assert!(
            tokenize("SELECT 'abc")
                .unwrap_err()
                .contains("string literal")
        );
        assert!(
            tokenize("SELECT \"abc")
                .unwrap_err()
                .contains("quoted identifier")
        );
        assert!(tokenize("SELECT /* abc").unwrap_err().contains("comment"));
        assert!(tokenize("SELECT $$abc").unwrap_err().contains("dollar"));
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}

//! Arrays of any dimension, from their text form (`{1,2,{NULL}}` style) or
//! from nested [`Value::Array`]s.

use super::encode_text as encode_element_text;
use super::{ColumnType, EncodeError, Encoded, Value, encode_typed, shorten};

/// A parsed array literal: nested lists of optional element texts.
enum Node {
    List(Vec<Node>),
    Elem(Option<String>),
}

/// An array text this parser does not read (it may still be one the
/// server's parser reads, e.g. with dimension bounds): the server decides.
fn malformed(text: &str, why: &str) -> EncodeError {
    EncodeError::for_server_because(format!(
        "malformed array literal: \"{}\" ({why})",
        shorten(text)
    ))
}

struct Parser<'a> {
    text: &'a str,
    chars: std::iter::Peekable<std::str::Chars<'a>>,
}

impl Parser<'_> {
    fn skip_ws(&mut self) {
        while self.chars.next_if(|c| super::is_space(*c)).is_some() {}
    }

    fn list(&mut self) -> Result<Node, EncodeError> {
        if self.chars.next() != Some('{') {
            return Err(malformed(self.text, "array value must start with \"{\""));
        }
        let mut items = Vec::new();
        self.skip_ws();
        if self.chars.next_if_eq(&'}').is_some() {
            return Ok(Node::List(items));
        }
        loop {
            self.skip_ws();
            let item = match self.chars.peek() {
                Some('{') => self.list()?,
                Some('"') => self.quoted()?,
                _ => self.unquoted()?,
            };
            items.push(item);
            self.skip_ws();
            match self.chars.next() {
                Some(',') => continue,
                Some('}') => return Ok(Node::List(items)),
                _ => return Err(malformed(self.text, "unexpected end of element")),
            }
        }
    }

    fn quoted(&mut self) -> Result<Node, EncodeError> {
        self.chars.next();
        let mut s = String::new();
        loop {
            match self.chars.next() {
                Some('"') => return Ok(Node::Elem(Some(s))),
                Some('\\') => match self.chars.next() {
                    Some(c) => s.push(c),
                    None => break,
                },
                Some(c) => s.push(c),
                None => break,
            }
        }
        Err(malformed(self.text, "unterminated quoted element"))
    }

    fn unquoted(&mut self) -> Result<Node, EncodeError> {
        let mut s = String::new();
        let mut escaped = false;
        while let Some(&c) = self.chars.peek() {
            if c == ',' || c == '}' {
                break;
            }
            if c == '{' || c == '"' {
                return Err(malformed(self.text, "unexpected character in element"));
            }
            self.chars.next();
            if c == '\\' {
                if let Some(next) = self.chars.next() {
                    s.push(next);
                    escaped = true;
                }
            } else {
                s.push(c);
            }
        }
        let trimmed = s.trim_end_matches(super::is_space);
        if trimmed.is_empty() {
            return Err(malformed(self.text, "empty element"));
        }
        if !escaped && trimmed.eq_ignore_ascii_case("null") {
            return Ok(Node::Elem(None));
        }
        Ok(Node::Elem(Some(trimmed.to_owned())))
    }
}

/// A tree of nested lists.
trait Nested: Sized {
    fn children(&self) -> Option<&[Self]>;
}

impl Nested for Node {
    fn children(&self) -> Option<&[Self]> {
        match self {
            Node::List(items) => Some(items),
            Node::Elem(_) => None,
        }
    }
}

impl Nested for Value {
    fn children(&self) -> Option<&[Self]> {
        match self {
            Value::Array(items) => Some(items),
            _ => None,
        }
    }
}

/// The dimensions of a rectangular nesting, or an error.
fn dims_of<T: Nested>(root: &T) -> Result<Vec<usize>, String> {
    let mut dims = Vec::new();
    let mut node = root;
    while let Some(items) = node.children() {
        dims.push(items.len());
        match items.first() {
            Some(first) => node = first,
            None => break,
        }
    }
    if dims.len() > 6 {
        return Err("number of array dimensions exceeds the maximum allowed (6)".to_owned());
    }
    check(root, &dims)?;
    Ok(dims)
}

fn check<T: Nested>(node: &T, dims: &[usize]) -> Result<(), String> {
    match (node.children(), dims.split_first()) {
        (Some(items), Some((len, rest))) if items.len() == *len => {
            items.iter().try_for_each(|i| check(i, rest))
        }
        (None, None) => Ok(()),
        (Some([]), None) => Ok(()),
        _ => {
            Err("multidimensional arrays must have sub-arrays with matching dimensions".to_owned())
        }
    }
}

fn header(out: &mut Vec<u8>, dims: &[usize], has_null: bool, elem_oid: u32) -> Encoded {
    let too_big = || EncodeError::new("array is too large".to_owned());
    let ndim = if dims.first() == Some(&0) {
        0
    } else {
        dims.len()
    };
    out.extend_from_slice(&i32::try_from(ndim).map_err(|_| too_big())?.to_be_bytes());
    out.extend_from_slice(&i32::from(has_null).to_be_bytes());
    out.extend_from_slice(&elem_oid.to_be_bytes());
    for d in &dims[..ndim] {
        out.extend_from_slice(&i32::try_from(*d).map_err(|_| too_big())?.to_be_bytes());
        out.extend_from_slice(&1i32.to_be_bytes());
    }
    Ok(())
}

/// Writes one element field (length-prefixed, or -1 for NULL).
fn element(out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>) -> Encoded) -> Encoded {
    super::field(out, body)
}

pub(super) fn encode_text(text: &str, elem: &ColumnType, out: &mut Vec<u8>) -> Encoded {
    let mut parser = Parser {
        text,
        chars: text.chars().peekable(),
    };
    parser.skip_ws();
    let root = parser.list()?;
    parser.skip_ws();
    if parser.chars.next().is_some() {
        return Err(malformed(text, "junk after closing right brace"));
    }
    if has_empty_sublist(&root) {
        return Err(malformed(text, "an empty sub-array"));
    }
    let dims = dims_of(&root).map_err(|why| malformed(text, &why))?;
    let mut leaves = Vec::new();
    flatten(&root, &mut leaves);
    header(out, &dims, leaves.iter().any(Option::is_none), elem.oid)?;
    for leaf in leaves {
        match leaf {
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(s) => element(out, |out| encode_element_text(s, elem, out))?,
        }
    }
    Ok(())
}

/// Whether a list inside the outermost one is empty (`{{}}`, `{1,{}}`),
/// which the server's parser refuses (or reads its own way).
fn has_empty_sublist(root: &Node) -> bool {
    fn any_empty(items: &[Node]) -> bool {
        items.iter().any(|item| match item {
            Node::List(inner) => inner.is_empty() || any_empty(inner),
            Node::Elem(_) => false,
        })
    }
    matches!(root, Node::List(items) if any_empty(items))
}

fn flatten<'a>(node: &'a Node, leaves: &mut Vec<Option<&'a str>>) {
    match node {
        Node::List(items) => items.iter().for_each(|i| flatten(i, leaves)),
        Node::Elem(e) => leaves.push(e.as_deref()),
    }
}

pub(super) fn encode_values(items: &[Value], elem: &ColumnType, out: &mut Vec<u8>) -> Encoded {
    let root = Value::Array(items.to_vec());
    let dims = dims_of(&root).map_err(EncodeError::new)?;
    let mut leaves = Vec::new();
    flatten_values(&root, &mut leaves);
    header(
        out,
        &dims,
        leaves.iter().any(|v| **v == Value::Null),
        elem.oid,
    )?;
    for leaf in leaves {
        match leaf {
            Value::Null => out.extend_from_slice(&(-1i32).to_be_bytes()),
            v => element(out, |out| encode_typed(v, elem, out))?,
        }
    }
    Ok(())
}

fn flatten_values<'a>(value: &'a Value, leaves: &mut Vec<&'a Value>) {
    match value {
        Value::Array(items) => items.iter().for_each(|i| flatten_values(i, leaves)),
        other => leaves.push(other),
    }
}

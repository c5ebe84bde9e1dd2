//! Adversarial strings for property tests of the text parsers: seeded,
//! reproducible, drawn from all of Unicode, and biased towards what breaks
//! parsers (their own syntax characters, multi-byte characters next to
//! digits, mutations of valid inputs).

/// A seeded generator of test strings (xorshift64*; no dependency).
#[derive(Debug, Clone)]
pub(crate) struct Strings {
    state: u64,
}

/// Characters that are syntax somewhere in pgbulk's parsers.
const SYNTAX: &[char] = &[
    '-', ':', '+', '.', ' ', 'T', 't', 'Z', '/', '@', 'P', 'Y', 'M', 'D', 'H', 'S', '{', '}', ',',
    '"', '\\', '\'', '=', '[', ']', '#', '%', '?', '&', ';', '\t', '\n', '\r', '\0', 'e', 'E', 'x',
    'N', 'a', 'n', 'b', 'c', 'i', 'f', 'y', '*', '(', ')', '_', '$',
];

/// Multi-byte characters of each UTF-8 length, some of them digits or
/// spaces to other definitions than ASCII's.
const WIDE: &[char] = &[
    'é',
    'ß',
    'Ω',
    'й',
    '١',
    '٣',
    '۵',
    '߀',
    '०',
    '１',
    '２',
    '：',
    '－',
    '＋',
    '\u{a0}',
    '\u{2009}',
    '\u{3000}',
    '\u{feff}',
    '\u{200b}',
    '中',
    '€',
    '😀',
    '𝟘',
    '\u{10ffff}',
    '\u{fffd}',
];

impl Strings {
    /// A generator started from `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
        }
    }

    fn next(&mut self) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number below `n` (`n > 0`).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap_or(0)
    }

    /// One character: syntax, a digit, a multi-byte character, or any
    /// Unicode scalar value.
    pub(crate) fn char(&mut self) -> char {
        match self.below(8) {
            0..=2 => SYNTAX[self.below(SYNTAX.len())],
            3 | 4 => char::from(b'0' + u8::try_from(self.below(10)).unwrap_or(0)),
            5 => WIDE[self.below(WIDE.len())],
            _ => loop {
                let v = u32::try_from(self.next() % 0x11_0000).unwrap_or(0);
                if let Some(c) = char::from_u32(v) {
                    break c;
                }
            },
        }
    }

    /// A string of up to `max` characters.
    pub(crate) fn string(&mut self, max: usize) -> String {
        let n = self.below(max + 1);
        (0..n).map(|_| self.char()).collect()
    }

    /// `seed` with one to three characters inserted, replaced or removed
    /// at character boundaries.
    pub(crate) fn mutate(&mut self, seed: &str) -> String {
        let mut chars: Vec<char> = seed.chars().collect();
        for _ in 0..=self.below(3) {
            let at = self.below(chars.len() + 1);
            match self.below(3) {
                0 => chars.insert(at, self.char()),
                1 if at < chars.len() => chars[at] = self.char(),
                _ if at < chars.len() => {
                    chars.remove(at);
                }
                _ => chars.push(self.char()),
            }
        }
        chars.into_iter().collect()
    }

    /// `count` strings: fresh ones and mutations of `seeds`, in turn.
    pub(crate) fn cases(&mut self, seeds: &[&str], count: usize) -> Vec<String> {
        let mut out: Vec<String> = seeds.iter().map(|s| (*s).to_owned()).collect();
        for i in 0..count {
            if seeds.is_empty() || i % 2 == 0 {
                out.push(self.string(24));
            } else {
                let seed = seeds[self.below(seeds.len())];
                out.push(self.mutate(seed));
            }
        }
        out
    }
}

/// Runs `check` on each case, naming the input that panicked.
pub(crate) fn each_case(cases: &[String], mut check: impl FnMut(&str)) {
    for case in cases {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(case)));
        assert!(outcome.is_ok(), "panicked on input {case:?}");
    }
}

/// How many cases each property test runs: a few thousand by default,
/// `PGBULK_PROPTEST_CASES` for longer runs.
pub(crate) fn case_count() -> usize {
    std::env::var("PGBULK_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000)
}

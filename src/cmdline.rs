//! Kernel command line tokenizer, following the kernel's own rules (`lib/cmdline.c`, `next_arg`
//! and `parse_args`):
//!
//! - arguments are split on whitespace outside double quotes; there is no escape for `"`;
//! - `k="a b"` and `"k=a b"` both give key `k`, value `a b`;
//! - a bare `--` ends the kernel's arguments (the rest belongs to init): we stop there;
//! - in parameter names `-` and `_` are the same character.
//!
//! uavstream reads its keys as `uavstream.KEY=VALUE`; the Pi firmware prepends keys of its own,
//! which we simply skip.

/// One `param[=value]` argument, borrowed from the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arg<'a> {
    pub param: &'a [u8],
    pub value: Option<&'a [u8]>,
}

/// Iterator over the arguments of a kernel command line.
#[derive(Debug, Clone)]
pub struct Args<'a> {
    rest: &'a [u8],
}

/// Tokenizes `line` the way the kernel does.
pub fn args(line: &[u8]) -> Args<'_> {
    Args { rest: skip_spaces(line) }
}

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn skip_spaces(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&c| is_space(c)).count();
    &s[n..]
}

impl<'a> Iterator for Args<'a> {
    type Item = Arg<'a>;

    fn next(&mut self) -> Option<Arg<'a>> {
        if self.rest.is_empty() {
            return None;
        }
        let mut args = self.rest;
        let mut in_quote = false;
        let mut quoted = false;
        if args[0] == b'"' {
            args = &args[1..];
            in_quote = true;
            quoted = true;
        }
        let mut equals = 0usize;
        let mut i = 0usize;
        while i < args.len() {
            let c = args[i];
            if is_space(c) && !in_quote {
                break;
            }
            // The kernel tests `equals == 0`, so an `=` at index 0 never splits.
            if equals == 0 && c == b'=' {
                equals = i;
            }
            if c == b'"' {
                in_quote = !in_quote;
            }
            i += 1;
        }
        let token = &args[..i];
        self.rest = skip_spaces(args.get(i + 1..).unwrap_or(&[]));

        let ends_with_quote = i > 0 && token[i - 1] == b'"';
        let arg = if equals == 0 {
            let end = if quoted && ends_with_quote { i - 1 } else { i };
            Arg { param: &token[..end], value: None }
        } else {
            let mut start = equals + 1;
            let value_quoted = token.get(start) == Some(&b'"');
            if value_quoted {
                start += 1;
            }
            let end = if (value_quoted || quoted) && ends_with_quote { i - 1 } else { i };
            Arg { param: &token[..equals], value: Some(&token[start.min(end)..end]) }
        };
        if arg.param == b"--" && arg.value.is_none() {
            self.rest = &[];
            return None;
        }
        Some(arg)
    }
}

/// Compares parameter names the kernel's way: `-` and `_` are equal.
pub fn param_eq(a: &[u8], b: &[u8]) -> bool {
    fn norm(c: u8) -> u8 {
        if c == b'-' {
            b'_'
        } else {
            c
        }
    }
    a.len() == b.len() && a.iter().zip(b).all(|(&x, &y)| norm(x) == norm(y))
}

/// The key of a `uavstream.KEY` parameter, or `None` for anyone else's.
pub fn uavstream_key(param: &[u8]) -> Option<&[u8]> {
    const PREFIX: &[u8] = b"uavstream.";
    if param.len() > PREFIX.len() && param_eq(&param[..PREFIX.len()], PREFIX) {
        Some(&param[PREFIX.len()..])
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(line: &str) -> heapless::Vec<(&str, Option<&str>), 16> {
        args(line.as_bytes())
            .map(|a| (core::str::from_utf8(a.param).unwrap(), a.value.map(|v| core::str::from_utf8(v).unwrap())))
            .collect()
    }

    #[test]
    fn splits_on_whitespace_outside_quotes() {
        assert_eq!(
            &collect("  ro\troot=/dev/mmcblk0p2  quiet\n")[..],
            &[("ro", None), ("root", Some("/dev/mmcblk0p2")), ("quiet", None)]
        );
    }

    #[test]
    fn quoted_value_and_quoted_argument_are_equal() {
        assert_eq!(&collect(r#"k="a b""#)[..], &[("k", Some("a b"))]);
        assert_eq!(&collect(r#""k=a b""#)[..], &[("k", Some("a b"))]);
        assert_eq!(&collect(r#""flag with space" x"#)[..], &[("flag with space", None), ("x", None)]);
    }

    #[test]
    fn quote_in_the_middle_keeps_the_kernels_oddities() {
        // No escapes: the quote toggles quoting and stays in the value.
        assert_eq!(&collect(r#"k=a"b c"d e"#)[..], &[("k", Some(r#"a"b c"d"#)), ("e", None)]);
        // Unterminated quote runs to the end of the line.
        assert_eq!(&collect(r#"k="a b c"#)[..], &[("k", Some("a b c"))]);
        assert_eq!(&collect(r#"k=""#)[..], &[("k", Some(""))]);
        assert_eq!(&collect("=x")[..], &[("=x", None)]);
        assert_eq!(&collect("k=")[..], &[("k", Some(""))]);
        assert_eq!(&collect("k==v")[..], &[("k", Some("=v"))]);
    }

    #[test]
    fn stops_at_double_dash() {
        assert_eq!(&collect("a=1 -- b=2 init")[..], &[("a", Some("1"))]);
        assert_eq!(&collect("a=1 --=x b")[..], &[("a", Some("1")), ("--", Some("x")), ("b", None)]);
    }

    #[test]
    fn firmware_prefix_and_uavstream_keys() {
        let line = "coherent_pool=1M 8250.nr_uarts=1 uavstream.width=1280 uavstream.max_clients=4 \
                    console=ttyS0 uavstream.path=\"/my cam\"";
        let keys: heapless::Vec<(&[u8], &[u8]), 8> =
            args(line.as_bytes()).filter_map(|a| Some((uavstream_key(a.param)?, a.value?))).collect();
        assert_eq!(keys.len(), 3);
        assert!(param_eq(keys[1].0, b"max-clients"));
        assert_eq!(keys[2], (&b"path"[..], &b"/my cam"[..]));
        assert_eq!(uavstream_key(b"uavstream."), None);
        assert_eq!(uavstream_key(b"uavstreamx.width"), None);
    }

    #[test]
    fn empty_and_blank_lines() {
        assert!(collect("").is_empty());
        assert!(collect(" \t\n").is_empty());
    }
}

//! The URL checks of tcllib's `::websocket::open`, which hands the URL (with
//! `ws` replaced by `http`) to `http::geturl` (http 2.9): the same URLs are
//! refused, with the same texts. What passes is then parsed for real by
//! `engine::client::parse_url`.

/// The parts `http::geturl`'s URL pattern takes apart.
struct Parts<'a> {
    proto: &'a str,
    user: &'a str,
    host: &'a str,
    port: &'a str,
    srvurl: &'a str,
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// `( [/\?] [^\#]* )? (?: \# (.*) )? $`: the path (with query), if `s` is one.
fn path_and_fragment(s: &str) -> Option<&str> {
    match s.chars().next() {
        None => Some(""),
        Some('/' | '?') => Some(s.split('#').next().unwrap_or("")),
        Some('#') => Some(""),
        Some(_) => None,
    }
}

/// After `//`: `(?: ([^@/\#?]+) @ )? ( [^/:\#?]+ | \[ [^/\#?]+ \] ) (?: : (\d+) )?`
/// followed by a path: (user, host, port, path).
fn authority(s: &str) -> Option<(&str, &str, &str, &str)> {
    let stop = |c: char| matches!(c, '/' | '#' | '?');
    let mut users = Vec::new();
    if let Some(at) = s.find(|c: char| c == '@' || stop(c)) {
        if s[at..].starts_with('@') && at > 0 {
            users.push((&s[..at], &s[at + 1..]));
        }
    }
    users.push(("", s));
    for (user, rest) in users {
        // A host name (or IPv4 address), or an IPv6 address in brackets
        // (ending at any `]` before the path: the pattern backtracks).
        let mut hosts = Vec::new();
        let name_end = rest
            .find(|c: char| c == ':' || stop(c))
            .unwrap_or(rest.len());
        if name_end > 0 {
            hosts.push(name_end);
        }
        if rest.starts_with('[') {
            let segment_end = rest.find(stop).unwrap_or(rest.len());
            let mut ends: Vec<usize> = rest[..segment_end]
                .match_indices(']')
                .map(|(i, _)| i + 1)
                .filter(|&e| e > 2)
                .collect();
            ends.reverse();
            hosts.extend(ends);
        }
        for host_end in hosts {
            let host = &rest[..host_end];
            let after = &rest[host_end..];
            if let Some(p) = after.strip_prefix(':') {
                let digits = p.bytes().take_while(|b| b.is_ascii_digit()).count();
                if digits > 0 {
                    if let Some(path) = path_and_fragment(&p[digits..]) {
                        return Some((user, host, &p[..digits], path));
                    }
                }
            }
            if let Some(path) = path_and_fragment(after) {
                return Some((user, host, "", path));
            }
        }
    }
    None
}

/// What follows the scheme: `(?: // authority )? path? fragment?`.
fn after_proto(rest: &str) -> Option<(&str, &str, &str, &str)> {
    if let Some(a) = rest.strip_prefix("//") {
        if let Some(parts) = authority(a) {
            return Some(parts);
        }
    }
    path_and_fragment(rest).map(|path| ("", "", "", path))
}

/// `(?: (\w+) : )? (?: // authority )? path? fragment? $`, trying the longer
/// alternatives first as the regular expression does.
fn parse(url: &str) -> Option<Parts<'_>> {
    let word_len: usize = url
        .chars()
        .take_while(|&c| is_word(c))
        .map(char::len_utf8)
        .sum();
    if word_len > 0 && url[word_len..].starts_with(':') {
        if let Some((user, host, port, srvurl)) = after_proto(&url[word_len + 1..]) {
            return Some(Parts {
                proto: &url[..word_len],
                user,
                host,
                port,
                srvurl,
            });
        }
    }
    after_proto(url).map(|(user, host, port, srvurl)| Parts {
        proto: "",
        user,
        host,
        port,
        srvurl,
    })
}

fn is_hex(b: u8) -> bool {
    b.is_ascii_hexdigit()
}

/// Every character is in `extra` or is a word character, or a `%XX` escape.
fn all_valid(s: &str, extra: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    for (at, c) in s.char_indices() {
        if at < i {
            continue;
        }
        if c == '%' {
            if at + 2 < b.len() && is_hex(b[at + 1]) && is_hex(b[at + 2]) {
                i = at + 3;
                continue;
            }
            return false;
        }
        if !(is_word(c) || extra.contains(c)) {
            return false;
        }
    }
    true
}

const USER_CHARS: &str = "-.~!$&'()*+,;=:";
const PATH_CHARS: &str = "-.~!$&'()*+,;=:@/";

/// The first `%` not followed by two hex digits, with up to `max` characters after it.
fn bad_escape(s: &str, max: usize, need: usize) -> Option<String> {
    for (at, _) in s.match_indices('%') {
        let b = s.as_bytes();
        let ok = at + 2 < b.len() && is_hex(b[at + 1]) && is_hex(b[at + 2]);
        if !ok {
            let tail: String = s[at + 1..].chars().take(max).collect();
            if tail.chars().count() >= need {
                return Some(format!("%{tail}"));
            }
        }
    }
    None
}

/// Checks `url` (as given to `::websocket::open`) the way tcllib 1.4.2 and
/// http::geturl do; `strict` is http::geturl's `-strict` (default 1).
/// Returns http::geturl's error text.
pub fn check_like_geturl(url: &str, strict: bool) -> Result<(), String> {
    let hturl = if url.len() >= 2 && url.as_bytes()[..2].eq_ignore_ascii_case(b"ws") {
        format!("http{}", &url[2..])
    } else {
        url.to_string()
    };
    let Some(p) = parse(&hturl) else {
        return Err(format!("Unsupported URL: {hturl}"));
    };
    if p.host.trim_matches(|c| c == '[' || c == ']').is_empty() {
        return Err(format!("Missing host part: {hturl}"));
    }
    let port = p.port.trim_start_matches('0');
    if port.len() > 5 || (port.len() == 5 && port > "65535") {
        return Err(format!("Invalid port number: {}", p.port));
    }
    if !p.user.is_empty() && strict && !all_valid(p.user, USER_CHARS) {
        return Err(match bad_escape(p.user, 2, 0) {
            Some(bad) => format!("Illegal encoding character usage \"{bad}\" in URL user"),
            None => "Illegal characters in URL user".to_string(),
        });
    }
    if !p.srvurl.is_empty() && strict {
        let srvurl = if p.srvurl.starts_with('/') {
            p.srvurl.to_string()
        } else {
            format!("/{}", p.srvurl)
        };
        let (path, query) = match srvurl.find('?') {
            Some(i) => (&srvurl[..i], Some(&srvurl[i + 1..])),
            None => (&srvurl[..], None),
        };
        let valid =
            all_valid(path, PATH_CHARS) && query.is_none_or(|q| all_valid(q, "-.~!$&'()*+,;=:@/?"));
        if !valid {
            return Err(match bad_escape(&srvurl, 2, 2) {
                Some(bad) => format!("Illegal encoding character usage \"{bad}\" in URL path"),
                None => "Illegal characters in URL path".to_string(),
            });
        }
    }
    let proto = if p.proto.is_empty() { "http" } else { p.proto };
    if !matches!(proto.to_ascii_lowercase().as_str(), "http" | "https") {
        return Err(format!("Unsupported URL type \"{proto}\""));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_like_geturl as check;

    /// The texts are those tclsh 8.6.13 with http 2.9.8 gives through
    /// tcllib 1.4.2's `::websocket::open`.
    #[test]
    fn refused_like_geturl() {
        let cases: &[(&str, &str)] = &[
            ("ws:///path", "Missing host part: http:///path"),
            ("ws://127.0.0.1:/", "Missing host part: http://127.0.0.1:/"),
            ("ws://", "Missing host part: http://"),
            ("ws:127.0.0.1:80/", "Unsupported URL: http:127.0.0.1:80/"),
            ("127.0.0.1:8080/x", "Unsupported URL: 127.0.0.1:8080/x"),
            ("ws://127.0.0.1:80/a b", "Illegal characters in URL path"),
            (
                "ws://h/%zz1",
                "Illegal encoding character usage \"%zz\" in URL path",
            ),
            ("ws://h:99999/", "Invalid port number: 99999"),
            ("ftp://h/", "Unsupported URL type \"ftp\""),
            ("ws://a b@h/", "Illegal characters in URL user"),
        ];
        for (url, want) in cases {
            assert_eq!(check(url, true), Err(want.to_string()), "{url}");
        }
    }

    #[test]
    fn accepted_like_geturl() {
        for url in [
            "ws://127.0.0.1:8080/",
            "wss://example.org/chat?room=1&x=%20",
            "WS://h",
            "ws://h?q",
            "ws://h/#frag",
            "ws://user:pw@h:1/p",
            "ws://[::1]:8080/x",
            "ws://h:065535/",
            "http://h/",
            "https://h/",
            "ws://h/\u{e9}t\u{e9}",
        ] {
            assert_eq!(check(url, true), Ok(()), "{url}");
        }
        // -strict 0 lets the path through.
        assert_eq!(check("ws://h/a b", false), Ok(()));
    }
}

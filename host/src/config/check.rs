//! The checks of one value that every part of the config shares: a whole
//! number in range, a positive number or duration, a name. Each reports where
//! the value stands and returns `None` (or false) when it is wrong.

use std::time::Duration;

use toml::Spanned;

use super::diag::Diagnostics;

pub(super) fn ranged(v: &Spanned<u32>, what: &str, max: u32, d: &mut Diagnostics<'_>) -> Option<u32> {
    let n = *v.get_ref();
    if (1..=max).contains(&n) {
        Some(n)
    } else {
        d.error(v.span(), format!("{what} = {n} is out of range"), Some(format!("between 1 and {max}")));
        None
    }
}

/// Letters, digits, '-', '_' and '.', 1 to 64 of them: safe in a URL, a
/// header, a metric label and a log line.
pub(super) fn plain_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

pub(super) fn valid_name(n: &Spanned<String>, what: &str, d: &mut Diagnostics<'_>) -> bool {
    let s = n.get_ref();
    let ok = plain_name(s);
    if !ok {
        d.error(n.span(), format!("{what} name \"{s}\" is not valid"), Some("use letters, digits, '-', '_' and '.' (at most 64)".into()));
    }
    ok
}

/// A base URL: http or https, a host, and no path, query or credentials.
/// `who` names it in the errors ("node", "gateway"), `speaks` says what it
/// speaks, `credentials` why it needs none in the URL.
pub(super) fn base_url(text: &str, who: &str, speaks: &str, credentials: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(text).map_err(|e| format!("is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("has scheme '{}'; {speaks}", url.scheme()));
    }
    if url.host().is_none() {
        return Err("has no host".into());
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(format!("has a path or query; give the {who}'s base URL only"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("carries credentials; {credentials}"));
    }
    Ok(url)
}

pub(super) fn positive(v: &Spanned<u64>, what: &str, d: &mut Diagnostics<'_>) -> Option<usize> {
    if *v.get_ref() == 0 {
        d.error(v.span(), format!("{what} must be above 0"), None);
        return None;
    }
    Some(*v.get_ref() as usize)
}

pub(super) fn positive_ms(v: &Spanned<u64>, what: &str, d: &mut Diagnostics<'_>) -> Option<Duration> {
    positive(v, what, d).map(|ms| Duration::from_millis(ms as u64))
}

//! A configured value that must never be printed (an `Authorization` header value): its
//! `Debug` is `<redacted>`, so a configuration can be logged or compared in tests whole.

use std::fmt;

#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let debug = format!("{:?}", Some(Secret("Bearer s3cret".into())));
        assert_eq!(debug, "Some(<redacted>)");
    }
}

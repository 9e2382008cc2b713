//! Longest-prefix routing on path segment boundaries: `/api` serves
//! `/api` and `/api/x`, never `/apiary`.

/// Routes to values of type `T`, longest prefix first.
#[derive(Debug)]
pub struct Router<T> {
    routes: Vec<(String, T)>,
}

impl<T> Router<T> {
    /// A router over `(prefix, value)` pairs; prefixes are normalised
    /// routes (`/`, `/blog`), unique.
    pub fn new(mut routes: Vec<(String, T)>) -> Self {
        routes.sort_by_key(|r| std::cmp::Reverse(r.0.len()));
        Self { routes }
    }

    /// Every `(prefix, value)`, longest prefix first.
    pub fn values(&self) -> impl Iterator<Item = (&str, &T)> {
        self.routes.iter().map(|(p, v)| (p.as_str(), v))
    }

    /// The value for `path` and its prefix.
    pub fn find(&self, path: &str) -> Option<(&str, &T)> {
        self.routes.iter().find_map(|(prefix, v)| {
            let hit = prefix == "/"
                || path
                    .strip_prefix(prefix.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
            hit.then_some((prefix.as_str(), v))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_boundaries_and_longest_prefix() {
        let r = Router::new(vec![
            ("/".into(), 0),
            ("/api".into(), 1),
            ("/api/v2".into(), 2),
        ]);
        assert_eq!(r.find("/api").map(|x| *x.1), Some(1));
        assert_eq!(r.find("/api/users").map(|x| *x.1), Some(1));
        assert_eq!(r.find("/api/v2/users").map(|x| *x.1), Some(2));
        assert_eq!(r.find("/apiary").map(|x| *x.1), Some(0));
        assert_eq!(r.find("/").map(|x| *x.1), Some(0));
        let r = Router::new(vec![("/api".into(), 1)]);
        assert_eq!(r.find("/apiary").map(|x| *x.1), None);
        assert_eq!(r.find("/").map(|x| *x.1), None);
    }
}

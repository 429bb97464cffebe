//! Tag filters: `*` (everything), `TagA`, `TagA || TagB`. The broker matches
//! consume-queue entries by tag hash first, then re-checks the tag string of
//! each record it read, so a hash collision never delivers a wrong tag.
//! Property filters (RocketMQ's SQL92 subset) live in [`sql`].

pub mod sql;

use crate::store::record::tag_hash;
use std::collections::HashSet;

/// A parsed tag expression.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TagFilter {
    /// Every message.
    #[default]
    All,
    /// Messages whose tag is one of these.
    Tags {
        /// Hashes of the wanted tags, for the consume-queue pass.
        hashes: HashSet<u64>,
        /// The wanted tags, for the exact re-check.
        tags: HashSet<String>,
    },
}

impl TagFilter {
    /// Parses `*`, empty, or tags joined by `||`.
    pub fn parse(expr: Option<&str>) -> Result<TagFilter, String> {
        let Some(expr) = expr.map(str::trim).filter(|e| !e.is_empty() && *e != "*") else {
            return Ok(TagFilter::All);
        };
        let mut tags = HashSet::new();
        for part in expr.split("||") {
            let tag = part.trim();
            if tag.is_empty() {
                return Err(format!("empty tag in expression {expr:?}"));
            }
            if tag == "*" {
                return Ok(TagFilter::All);
            }
            tags.insert(tag.to_string());
        }
        Ok(TagFilter::Tags { hashes: tags.iter().map(|t| tag_hash(Some(t))).collect(), tags })
    }

    /// Whether an entry with this tag hash may match.
    pub fn may_match(&self, hash: u64) -> bool {
        match self {
            TagFilter::All => true,
            TagFilter::Tags { hashes, .. } => hashes.contains(&hash),
        }
    }

    /// Whether a record with this tag matches exactly.
    pub fn matches(&self, tag: Option<&str>) -> bool {
        match self {
            TagFilter::All => true,
            TagFilter::Tags { tags, .. } => tag.is_some_and(|t| tags.contains(t)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_star_single_and_alternatives() {
        assert_eq!(TagFilter::parse(None), Ok(TagFilter::All));
        assert_eq!(TagFilter::parse(Some(" * ")), Ok(TagFilter::All));
        let filter = TagFilter::parse(Some("TagA || TagB")).expect("parse");
        assert!(filter.matches(Some("TagB")));
        assert!(!filter.matches(Some("TagC")));
        assert!(!filter.matches(None));
        assert!(filter.may_match(tag_hash(Some("TagA"))));
        assert!(TagFilter::parse(Some("A || ")).is_err());
    }
}

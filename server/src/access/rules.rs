//! Who may read and publish each topic: the rules an IIS admin writes in one TOML file beside
//! `web.config` (`EVENTS_ACCESS_FILE`). Without a file every topic is open to everyone, as
//! before there were rules.
//!
//! ```toml
//! # A topic not named below follows [default]; without [default], everyone may read and publish.
//! [default]
//! read = ["everyone"]
//! publish = ["signed-in"]
//!
//! [topic.ops]
//! read = ['group:CONTOSO\Operations', 'user:CONTOSO\alice']
//! publish = ['group:CONTOSO\Operations']
//! ```
//!
//! Who a rule names: `everyone` (anonymous viewers too), `signed-in` (anyone we know: a Windows
//! user or a token), `user:NAME` (a Windows account as `DOMAIN\name`, or a token's subject) and
//! `group:NAME` (a Windows group as `DOMAIN\name`). Windows names are compared without regard
//! to case, as Windows does; a token's subject exactly. A token's own grants (see `token.rs`)
//! allow what they name on top of the rules.

use super::{Viewer, Who};
use serde::Deserialize;
use std::{collections::HashMap, path::Path};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Read,
    Publish,
}

impl Action {
    pub fn verb(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Publish => "publish on",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Principal {
    Everyone,
    SignedIn,
    User(String),
    Group(String),
}

impl Principal {
    fn parse(text: &str) -> Result<Principal, String> {
        let text = text.trim();
        match text {
            "everyone" => return Ok(Principal::Everyone),
            "signed-in" => return Ok(Principal::SignedIn),
            _ => {}
        }
        let named = |prefix: &str| {
            text.strip_prefix(prefix)
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_string)
        };
        if let Some(name) = named("user:") {
            return Ok(Principal::User(name));
        }
        if let Some(name) = named("group:") {
            return Ok(Principal::Group(name));
        }
        Err(format!(
            "'{text}' is not one of everyone, signed-in, user:NAME, group:NAME"
        ))
    }

    fn matches(&self, who: &Who) -> bool {
        match (self, who) {
            (Principal::Everyone, _) => true,
            (Principal::SignedIn, who) => !matches!(who, Who::Anonymous),
            (Principal::User(name), Who::Windows { account, .. }) => {
                name.eq_ignore_ascii_case(account)
            }
            (Principal::User(name), Who::Token { subject }) => name == subject,
            (Principal::Group(name), Who::Windows { groups, .. }) => {
                groups.iter().any(|g| g.eq_ignore_ascii_case(name))
            }
            _ => false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Rule {
    read: Vec<Principal>,
    publish: Vec<Principal>,
}

impl Rule {
    fn open() -> Rule {
        Rule {
            read: vec![Principal::Everyone],
            publish: vec![Principal::Everyone],
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rules {
    default: Rule,
    topics: HashMap<String, Rule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRules {
    default: Option<FileRule>,
    #[serde(default)]
    topic: HashMap<String, FileRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRule {
    read: Option<Vec<String>>,
    publish: Option<Vec<String>>,
}

impl Rules {
    /// Every topic open to everyone: no file.
    pub fn open() -> Rules {
        Rules {
            default: Rule::open(),
            topics: HashMap::new(),
        }
    }

    /// The file's rules, checked against the topics this server has: a rule for a topic it
    /// does not have is a typo that would leave the real topic open, so it stops the start.
    pub fn load(path: &Path, known: &[String]) -> Result<Rules, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read '{}': {e}", path.display()))?;
        Rules::parse(&text, known).map_err(|e| format!("'{}': {e}", path.display()))
    }

    pub fn parse(text: &str, known: &[String]) -> Result<Rules, String> {
        let file: FileRules = toml::from_str(text).map_err(|e| e.message().to_string())?;
        let open = Rule::open();
        let default = match file.default {
            Some(rule) => rule_from(rule, &open).map_err(|e| format!("[default]: {e}"))?,
            None => open,
        };
        let mut topics = HashMap::new();
        for (topic, rule) in file.topic {
            if !known.contains(&topic) {
                return Err(format!(
                    "[topic.{topic}]: this server has no topic '{topic}' (it has: {}; see EVENTS_TOPICS)",
                    known.join(", ")
                ));
            }
            let rule = rule_from(rule, &default).map_err(|e| format!("[topic.{topic}]: {e}"))?;
            topics.insert(topic, rule);
        }
        Ok(Rules { default, topics })
    }

    /// Whether the viewer may do this on the topic: its token grants it, or the topic's rule
    /// names someone the viewer is.
    pub fn allows(&self, viewer: &Viewer, action: Action, topic: &str) -> bool {
        if viewer.granted(action, topic) {
            return true;
        }
        let rule = self.topics.get(topic).unwrap_or(&self.default);
        let who = match action {
            Action::Read => &rule.read,
            Action::Publish => &rule.publish,
        };
        who.iter().any(|p| p.matches(&viewer.who))
    }

    /// Whether no topic is closed to anyone (for the tests: the routes ask per viewer and
    /// topic).
    #[cfg(test)]
    pub fn all_open(&self) -> bool {
        let open = Rule::open();
        self.default == open && self.topics.values().all(|r| *r == open)
    }
}

/// A missing list is taken from `fallback` (a topic's rule from `[default]`).
fn rule_from(rule: FileRule, fallback: &Rule) -> Result<Rule, String> {
    let list = |names: Option<Vec<String>>, fallback: &[Principal], what: &str| match names {
        None => Ok(fallback.to_vec()),
        Some(names) => names
            .iter()
            .map(|n| Principal::parse(n))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{what}: {e}")),
    };
    Ok(Rule {
        read: list(rule.read, &fallback.read, "read")?,
        publish: list(rule.publish, &fallback.publish, "publish")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> Vec<String> {
        ["tick", "chat", "alert", "ops"].map(String::from).to_vec()
    }

    const FILE: &str = r#"
        [default]
        read = ["everyone"]
        publish = ["signed-in"]

        [topic.ops]
        read = ['group:CONTOSO\Operations', 'user:CONTOSO\alice', "user:svc-dashboard"]
        publish = ['group:CONTOSO\Operations']

        [topic.alert]
        publish = ["user:pager"]
    "#;

    fn windows(account: &str, groups: &[&str]) -> Viewer {
        Viewer::windows(account, groups.iter().map(|g| g.to_string()).collect())
    }

    #[test]
    fn rules_name_users_groups_the_signed_in_and_everyone() {
        let rules = Rules::parse(FILE, &known()).expect("rules");
        let anonymous = Viewer::anonymous();
        let alice = windows(r"contoso\ALICE", &[r"CONTOSO\Domain Users"]);
        let bob = windows(r"CONTOSO\bob", &[r"contoso\operations"]);
        let carol = windows(r"CONTOSO\carol", &[r"CONTOSO\Domain Users"]);
        let service = Viewer::token("svc-dashboard", "Dashboard", vec![], vec![]);

        for v in [&anonymous, &alice, &bob, &carol, &service] {
            assert!(rules.allows(v, Action::Read, "chat"));
        }
        assert!(!rules.allows(&anonymous, Action::Publish, "chat"));
        assert!(rules.allows(&carol, Action::Publish, "chat"));

        assert!(rules.allows(&alice, Action::Read, "ops"), "user, any case");
        assert!(rules.allows(&bob, Action::Read, "ops"), "group, any case");
        assert!(rules.allows(&service, Action::Read, "ops"), "token subject");
        assert!(!rules.allows(&carol, Action::Read, "ops"));
        assert!(!rules.allows(&anonymous, Action::Read, "ops"));
        assert!(rules.allows(&bob, Action::Publish, "ops"));
        assert!(!rules.allows(&alice, Action::Publish, "ops"));

        // [topic.alert] names only publish: read comes from [default].
        assert!(rules.allows(&anonymous, Action::Read, "alert"));
        assert!(!rules.allows(&bob, Action::Publish, "alert"));
        assert!(!rules.all_open());
    }

    #[test]
    fn a_token_subject_is_matched_exactly_and_its_grants_add_to_the_rules() {
        let rules = Rules::parse(FILE, &known()).expect("rules");
        let shouting = Viewer::token("SVC-DASHBOARD", "x", vec![], vec![]);
        assert!(!rules.allows(&shouting, Action::Read, "ops"));
        let granted = Viewer::token("x", "x", vec!["ops".into()], vec!["alert".into()]);
        assert!(rules.allows(&granted, Action::Read, "ops"));
        assert!(rules.allows(&granted, Action::Publish, "alert"));
        assert!(
            !rules.allows(&granted, Action::Publish, "ops"),
            "grant for another topic"
        );
        let everything = Viewer::token("x", "x", vec!["*".into()], vec!["*".into()]);
        assert!(rules.allows(&everything, Action::Publish, "ops"));
    }

    #[test]
    fn no_file_leaves_everything_open() {
        let rules = Rules::open();
        assert!(rules.all_open());
        assert!(rules.allows(&Viewer::anonymous(), Action::Publish, "ops"));
        assert!(Rules::parse("", &known()).expect("empty file").all_open());
    }

    #[test]
    fn mistakes_in_the_file_are_refused_with_where_they_are() {
        let unknown =
            Rules::parse("[topic.opz]\nread = [\"everyone\"]", &known()).expect_err("refused");
        assert!(
            unknown.contains("[topic.opz]") && unknown.contains("ops"),
            "{unknown}"
        );
        let bad = Rules::parse("[topic.ops]\nread = [\"admins\"]", &known()).expect_err("refused");
        assert!(
            bad.contains("[topic.ops]: read") && bad.contains("'admins'"),
            "{bad}"
        );
        let empty_name =
            Rules::parse("[default]\nread = [\"user:\"]", &known()).expect_err("refused");
        assert!(empty_name.contains("[default]"), "{empty_name}");
        let typo =
            Rules::parse("[topic.ops]\nreed = [\"everyone\"]", &known()).expect_err("refused");
        assert!(typo.contains("reed"), "{typo}");
        assert!(Rules::parse("not = [toml", &known()).is_err());
    }
}

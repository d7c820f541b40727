//! Who may do what: one policy file from which both the NATS server's accounts and
//! the node's per-command authorization are made, so the two cannot disagree.
//!
//! The NATS server draws the boundaries: jetsource's processes live in one account
//! (the event store is theirs), every client application in an account of its own
//! that imports jetsource's `cmd.>` and `qry.>` services with `share`. So the
//! server stamps each request with the caller's account and user
//! (`Nats-Request-Info`, which a client cannot forge through an import), an
//! application can subscribe to nothing but its own account's traffic, and a
//! reply can only ever land in the account that asked. The node then decides per
//! command and per query from the caller's roles, answering 403 to the rest (and
//! logging it under the `audit` target).
//!
//! ```toml
//! # jetsource's own processes (node, projections, sagas, the CLI): trusted.
//! [service]
//! account = "JETSOURCE"
//! users = [{ user = "jetsource", password = "$JETSOURCE_PASSWORD" }]
//!
//! # What a role may send (`<aggregate>.<Command>`) and ask (`<view>.<query>`);
//! # `*` stands for one whole name.
//! [roles.recruiter]
//! commands = ["person.Register", "organization.*"]
//! queries = ["*.*"]
//!
//! # One NATS account and user per client application.
//! [[clients]]
//! name = "hr_portal"
//! password = "$HR_PORTAL_PASSWORD"   # `$NAME`: read from the server's environment
//! roles = ["recruiter"]
//! delegate = true                    # may name the end user it acts for
//! ```
//!
//! `jetsource policy nats-config <file>` prints the server's `accounts` block;
//! `jetsource node --policy <file>` enforces the same file.

use crate::Subjects;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;

/// A deployment's policy: the service account, the roles, the client applications.
///
/// ```
/// let policy = jetsource::Policy::from_toml(r#"
///     [service]
///     account = "JETSOURCE"
///     users = [{ user = "jetsource", password = "$JETSOURCE_PASSWORD" }]
///     [roles.reader]
///     queries = ["person.get"]
///     [[clients]]
///     name = "portal"
///     password = "$PORTAL_PASSWORD"
///     roles = ["reader"]
/// "#).unwrap();
/// let portal = jetsource::Caller::Client { account: "portal".into(), user: None };
/// assert!(policy.authorize(&portal, jetsource::policy::Action::Query { view: "person", query: "get" }).is_ok());
/// assert!(policy.authorize(&portal, jetsource::policy::Action::Command { aggregate: "person", command: "Register" }).is_err());
/// ```
#[derive(Debug, Clone)]
pub struct Policy {
    service: Service,
    roles: BTreeMap<String, Role>,
    clients: Vec<Client>,
    by_account: HashMap<String, usize>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    service: Service,
    #[serde(default)]
    roles: BTreeMap<String, Role>,
    #[serde(default)]
    clients: Vec<Client>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Service {
    account: String,
    users: Vec<Credential>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Credential {
    user: Option<String>,
    password: Option<String>,
    nkey: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Role {
    #[serde(default)]
    commands: Vec<String>,
    #[serde(default)]
    queries: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Client {
    name: String,
    password: Option<String>,
    nkey: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    delegate: bool,
}

/// Who sent a request, as the NATS server tells it.
///
/// ```
/// let caller = jetsource::Caller::Client { account: "hr_portal".into(), user: Some("hr_portal".into()) };
/// assert_eq!(caller.actor().as_deref(), Some("hr_portal"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A client inside jetsource's own account (the node, a saga, an operator's
    /// CLI), or any client of a deployment without accounts: trusted, since it
    /// can write the event stream directly anyway.
    Internal,
    /// A client application reaching jetsource through a service import: the
    /// server wrote its account (and, with `share`, its user).
    Client {
        /// The caller's NATS account.
        account: String,
        /// The caller's NATS user, when the import shares it.
        user: Option<String>,
    },
}

impl Caller {
    /// The actor recorded on events: `account`, or `account/user` when the user
    /// differs from the account's name. `None` for an internal caller.
    pub fn actor(&self) -> Option<String> {
        match self {
            Caller::Internal => None,
            Caller::Client { account, user } => Some(match user {
                Some(user) if !user.is_empty() && user != account => format!("{account}/{user}"),
                _ => account.clone(),
            }),
        }
    }
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.actor() {
            None => f.write_str("jetsource's own account"),
            Some(actor) => write!(f, "client {actor}"),
        }
    }
}

/// What a request asks to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action<'a> {
    /// `cmd.<aggregate>.<command>`.
    Command {
        /// The aggregate type.
        aggregate: &'a str,
        /// The command's name.
        command: &'a str,
    },
    /// `qry.<view>.<query>`.
    Query {
        /// The view or aggregate type.
        view: &'a str,
        /// The query's name.
        query: &'a str,
    },
}

impl std::fmt::Display for Action<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Command { aggregate, command } => write!(f, "command {aggregate}.{command}"),
            Action::Query { view, query } => write!(f, "query {view}.{query}"),
        }
    }
}

/// A refused action, with the sentence the caller gets back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Denied(pub String);

/// A policy file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML of the policy's shape.
    #[error("policy: {0}")]
    Parse(#[from] toml::de::Error),
    /// The file is well-formed but says something impossible.
    #[error("policy: {0}")]
    Invalid(String),
}

impl Policy {
    /// Reads and checks a policy file.
    ///
    /// ```no_run
    /// let policy = jetsource::Policy::load("dev/policy.toml".as_ref()).unwrap();
    /// ```
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Policy::from_toml(&text)
    }

    /// Parses and checks a policy (see the module docs for the format).
    pub fn from_toml(text: &str) -> Result<Policy, PolicyError> {
        let file: File = toml::from_str(text)?;
        check(&file).map_err(PolicyError::Invalid)?;
        let by_account = file
            .clients
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.clone(), i))
            .collect();
        Ok(Policy {
            service: file.service,
            roles: file.roles,
            clients: file.clients,
            by_account,
        })
    }

    /// The account jetsource's processes run in.
    pub fn service_account(&self) -> &str {
        &self.service.account
    }

    /// Whether `caller` may do `action`. Internal callers may do anything.
    pub fn authorize(&self, caller: &Caller, action: Action<'_>) -> Result<(), Denied> {
        let client = match self.client(caller)? {
            None => return Ok(()),
            Some(client) => client,
        };
        let (name, patterns): (String, fn(&Role) -> &Vec<String>) = match action {
            Action::Command { aggregate, command } => {
                (format!("{aggregate}.{command}"), |r| &r.commands)
            }
            Action::Query { view, query } => (format!("{view}.{query}"), |r| &r.queries),
        };
        let allowed = client
            .roles
            .iter()
            .filter_map(|r| self.roles.get(r))
            .flat_map(patterns)
            .any(|p| matches(p, &name));
        if allowed {
            Ok(())
        } else {
            Err(Denied(format!(
                "{caller} may not send {action} (roles: {})",
                client.roles.join(", ")
            )))
        }
    }

    /// Whether `caller` may name an end user it acts for (`Jetsource-On-Behalf-Of`).
    pub fn may_delegate(&self, caller: &Caller) -> bool {
        matches!(
            self.client(caller),
            Ok(None) | Ok(Some(Client { delegate: true, .. }))
        )
    }

    /// The client entry of an outside caller; `None` for an internal one.
    fn client(&self, caller: &Caller) -> Result<Option<&Client>, Denied> {
        match caller {
            Caller::Internal => Ok(None),
            Caller::Client { account, .. } if *account == self.service.account => Ok(None),
            Caller::Client { account, .. } => self
                .by_account
                .get(account)
                .map(|&i| Some(&self.clients[i]))
                .ok_or_else(|| Denied(format!("{caller} is not in the policy"))),
        }
    }

    /// The NATS server's `accounts` block for this policy: the service account
    /// exporting `cmd.>` and `qry.>` (under `subjects`' prefix), and one account
    /// per client importing them with `share`, its user allowed to publish only
    /// commands and queries and to subscribe only to its inboxes. Include it
    /// from the server config.
    pub fn nats_config(&self, subjects: &Subjects) -> String {
        let prefix = subjects.prefix();
        let services = [format!("{prefix}cmd.>"), format!("{prefix}qry.>")];
        let mut out = String::from(
            "# Generated by `jetsource policy nats-config` from the policy file; edit that\n\
             # file, not this one. `$NAME` values come from the server's environment.\n\
             accounts {\n",
        );
        let _ = writeln!(out, "  {}: {{", quoted(&self.service.account));
        out.push_str("    jetstream: enabled\n    users: [\n");
        for user in &self.service.users {
            let _ = writeln!(out, "      {{ {} }}", credential(user, None));
        }
        out.push_str("    ]\n    exports: [\n");
        for s in &services {
            let _ = writeln!(out, "      {{ service: {} }}", quoted(s));
        }
        out.push_str("    ]\n  }\n");
        for client in &self.clients {
            let user = Credential {
                user: Some(client.name.clone()),
                password: client.password.clone(),
                nkey: client.nkey.clone(),
            };
            let permissions = format!(
                "permissions: {{ publish: {{ allow: [{}, {}] }}, subscribe: {{ allow: [\"_INBOX.>\"] }} }}",
                quoted(&services[0]),
                quoted(&services[1])
            );
            let _ = writeln!(out, "  {}: {{", quoted(&client.name));
            let _ = writeln!(
                out,
                "    users: [\n      {{ {} }}\n    ]",
                credential(&user, Some(&permissions))
            );
            out.push_str("    imports: [\n");
            for s in &services {
                let _ = writeln!(
                    out,
                    "      {{ service: {{ account: {}, subject: {} }}, share: true }}",
                    quoted(&self.service.account),
                    quoted(s)
                );
            }
            out.push_str("    ]\n  }\n");
        }
        out.push_str("}\n");
        out
    }
}

/// One `users` entry: `user`/`password` or `nkey`, plus permissions.
fn credential(c: &Credential, permissions: Option<&str>) -> String {
    let mut parts = Vec::new();
    if let Some(nkey) = &c.nkey {
        parts.push(format!("nkey: {}", quoted(nkey)));
    } else {
        if let Some(user) = &c.user {
            parts.push(format!("user: {}", quoted(user)));
        }
        if let Some(password) = &c.password {
            parts.push(format!("password: {}", secret(password)));
        }
    }
    parts.extend(permissions.map(str::to_string));
    parts.join(", ")
}

/// `$NAME` stays a bare variable (the server reads its environment); anything else
/// (a bcrypt hash, say) is a quoted string.
fn secret(value: &str) -> String {
    let variable = value.strip_prefix('$').is_some_and(|name| {
        name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    });
    if variable {
        value.to_string()
    } else {
        quoted(value)
    }
}

fn quoted(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

/// `pattern` (`person.Register`, `person.*`, `*.*`) matches `name` (`person.Register`).
fn matches(pattern: &str, name: &str) -> bool {
    let mut p = pattern.split('.');
    let mut n = name.split('.');
    loop {
        match (p.next(), n.next()) {
            (None, None) => return true,
            (Some(p), Some(n)) if p == "*" || p == n => {}
            _ => return false,
        }
    }
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn check(file: &File) -> Result<(), String> {
    if !is_name(&file.service.account) {
        return Err(format!(
            "service account {:?} must be 1 to 64 of [A-Za-z0-9_-]",
            file.service.account
        ));
    }
    if file.service.users.is_empty() {
        return Err("the service account needs at least one user".into());
    }
    for user in &file.service.users {
        if user.nkey.is_none() && (user.user.is_none() || user.password.is_none()) {
            return Err("a service user needs `user` and `password`, or `nkey`".into());
        }
    }
    for (name, role) in &file.roles {
        for pattern in role.commands.iter().chain(&role.queries) {
            let ok = pattern.split('.').count() == 2
                && pattern.split('.').all(|t| t == "*" || is_name(t));
            if !ok {
                return Err(format!(
                    "role {name}: {pattern:?} must be `<name>.<name>`, either part `*`"
                ));
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    for client in &file.clients {
        if !is_name(&client.name) {
            return Err(format!(
                "client {:?} must be 1 to 64 of [A-Za-z0-9_-]",
                client.name
            ));
        }
        if client.name == file.service.account || !seen.insert(client.name.as_str()) {
            return Err(format!("account name {} is used twice", client.name));
        }
        if client.password.is_none() == client.nkey.is_none() {
            return Err(format!(
                "client {}: give exactly one of `password` and `nkey`",
                client.name
            ));
        }
        if let Some(role) = client.roles.iter().find(|r| !file.roles.contains_key(*r)) {
            return Err(format!("client {}: no role {role}", client.name));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_whole_names_only() {
        assert!(matches("person.*", "person.Register"));
        assert!(matches("*.*", "organization.get"));
        assert!(matches("person.Register", "person.Register"));
        assert!(!matches("person.Reg", "person.Register"));
        assert!(!matches("person.*", "personnel.get"));
        assert!(!matches("*", "person.get"));
    }

    #[test]
    fn secrets_stay_variables_or_are_quoted() {
        assert_eq!(secret("$APP_PASSWORD"), "$APP_PASSWORD");
        assert_eq!(secret("$2a$11$abc"), "\"$2a$11$abc\"");
        assert_eq!(secret("plain"), "\"plain\"");
    }
}

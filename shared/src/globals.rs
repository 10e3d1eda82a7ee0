//! What lives outside a server's databases, as SQL: the globals script of a whole-server run.
//!
//! A run's globals backup is one plain SQL script: `pg_dumpall --globals-only` (roles,
//! memberships, role settings, tablespaces), then, per database of the run, what `pg_dump
//! --create` would carry (owner, `ALTER DATABASE … SET`, `ALTER ROLE … IN DATABASE … SET`,
//! `GRANT`/`REVOKE … ON DATABASE`). A restore applies it statement by statement, so that a
//! role that already exists on the target is kept as it is and each database's statements
//! run once that database exists: [`split`] cuts the script into statements (quotes, dollar
//! quotes and comments respected, psql meta-commands left out) and [`classify`] says what each
//! touches. Everything here is pure; the SQL runs in `ops::server`.

use crate::model::{quote_ident, sql_ident};

/// Splits an SQL script into its statements (each without its `;`, comments before it left
/// out). Lines that start a statement with a backslash are psql meta-commands (`\connect`,
/// `\restrict`) and are dropped.
pub fn split(script: &str) -> Vec<String> {
    let b = script.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut start: Option<usize> = None;
    while i < b.len() {
        let c = b[i];
        if start.is_none() {
            if c.is_ascii_whitespace() || c == b';' {
                i += 1;
                continue;
            }
            if c == b'\\' {
                i = line_end(b, i);
                continue;
            }
            if c == b'-' && b.get(i + 1) == Some(&b'-') {
                i = line_end(b, i);
                continue;
            }
            if c == b'/' && b.get(i + 1) == Some(&b'*') {
                i = block_comment_end(b, i);
                continue;
            }
            start = Some(i);
        }
        match c {
            b'-' if b.get(i + 1) == Some(&b'-') => i = line_end(b, i),
            b'/' if b.get(i + 1) == Some(&b'*') => i = block_comment_end(b, i),
            b'\'' => {
                let escapes =
                    i > 0 && matches!(b[i - 1], b'E' | b'e') && (i < 2 || !is_ident_byte(b[i - 2]));
                i = quoted_end(b, i, b'\'', escapes);
            }
            b'"' => i = quoted_end(b, i, b'"', false),
            b'$' => i = dollar_end(b, i),
            b';' => {
                let s = start.take().expect("inside a statement");
                out.push(script[s..i].trim_end().to_owned());
                i += 1;
            }
            _ => i += 1,
        }
    }
    if let Some(s) = start {
        let rest = script[s..].trim();
        if !rest.is_empty() {
            out.push(rest.to_owned());
        }
    }
    out
}

fn is_ident_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80
}

fn line_end(b: &[u8], i: usize) -> usize {
    b[i..]
        .iter()
        .position(|&c| c == b'\n')
        .map_or(b.len(), |p| i + p + 1)
}

fn block_comment_end(b: &[u8], mut i: usize) -> usize {
    let mut depth = 0;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            depth += 1;
            i += 2;
        } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    b.len()
}

/// The index after the quote closing the one at `i` (a doubled quote continues it).
fn quoted_end(b: &[u8], mut i: usize, quote: u8, backslash_escapes: bool) -> usize {
    i += 1;
    while i < b.len() {
        if backslash_escapes && b[i] == b'\\' {
            i += 2;
            continue;
        }
        if b[i] == quote {
            if b.get(i + 1) == Some(&quote) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    b.len()
}

/// After a `$tag$ … $tag$` string starting at `i`, or just past a lone `$` (a parameter).
fn dollar_end(b: &[u8], i: usize) -> usize {
    let mut j = i + 1;
    if j < b.len() && b[j].is_ascii_digit() {
        return j;
    }
    while j < b.len() && is_ident_byte(b[j]) {
        j += 1;
    }
    if b.get(j) != Some(&b'$') {
        return i + 1;
    }
    let tag = &b[i..=j];
    let body = j + 1;
    match b[body..].windows(tag.len()).position(|w| w == tag) {
        Some(p) => body + p + tag.len(),
        None => b.len(),
    }
}

/// A word of a statement, for classifying it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// An unquoted word, lowercased (a keyword or a plain identifier).
    Word(String),
    /// A double-quoted identifier, unescaped.
    Quoted(String),
    /// Anything else (strings, numbers, punctuation).
    Other,
}

impl Token {
    fn is(&self, keyword: &str) -> bool {
        matches!(self, Token::Word(w) if w == keyword)
    }
    fn name(&self) -> Option<String> {
        match self {
            Token::Word(w) => Some(w.clone()),
            Token::Quoted(q) => Some(q.clone()),
            Token::Other => None,
        }
    }
}

fn tokens(statement: &str) -> Vec<Token> {
    let b = statement.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'-' && b.get(i + 1) == Some(&b'-') {
            i = line_end(b, i);
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            i = block_comment_end(b, i);
        } else if c == b'"' {
            let end = quoted_end(b, i, b'"', false);
            let inner = &statement[i + 1..end.saturating_sub(1).max(i + 1)];
            out.push(Token::Quoted(inner.replace("\"\"", "\"")));
            i = end;
        } else if c == b'\'' {
            i = quoted_end(b, i, b'\'', false);
            out.push(Token::Other);
        } else if c == b'$' {
            i = dollar_end(b, i);
            out.push(Token::Other);
        } else if is_ident_byte(c) && !c.is_ascii_digit() {
            let s = i;
            while i < b.len() && (is_ident_byte(b[i]) || b[i] == b'$') {
                i += 1;
            }
            let word = &statement[s..i];
            // E'…' and U&'…' strings start with a letter.
            if b.get(i) == Some(&b'\'') && word.eq_ignore_ascii_case("e") {
                i = quoted_end(b, i, b'\'', true);
                out.push(Token::Other);
            } else {
                out.push(Token::Word(word.to_ascii_lowercase()));
            }
        } else if c.is_ascii_digit() || (c == b'-' && b.get(i + 1).is_some_and(u8::is_ascii_digit))
        {
            let s = i;
            i += 1;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            out.push(Token::Word(statement[s..i].to_owned()));
        } else {
            i += 1;
            out.push(Token::Other);
        }
    }
    out
}

/// The attributes an `ALTER ROLE name WITH …` statement sets, as a role of the manifest
/// holds them (`None` for other statements). Attributes it does not name keep the defaults
/// of `CREATE ROLE` (no superuser, inherit, no createrole/createdb/login/replication/
/// bypassrls, no connection limit), as pg_dumpall relies on.
pub fn role_attributes(statement: &str) -> Option<crate::model::RoleInfo> {
    let t = tokens(statement);
    if !(t.first()?.is("alter") && (t.get(1)?.is("role") || t.get(1)?.is("user"))) {
        return None;
    }
    let name = t.get(2)?.name()?;
    if !t.get(3).is_some_and(|x| x.is("with")) {
        return None;
    }
    let mut role = crate::model::RoleInfo {
        name,
        superuser: false,
        inherit: true,
        createrole: false,
        createdb: false,
        login: false,
        replication: false,
        bypassrls: false,
        connection_limit: -1,
        member_of: Vec::new(),
    };
    for (i, tok) in t.iter().enumerate().skip(4) {
        let Token::Word(w) = tok else { continue };
        let (flag, on) = match w.strip_prefix("no") {
            Some(rest) if rest != "ne" => (rest, false),
            _ => (w.as_str(), true),
        };
        match flag {
            "superuser" => role.superuser = on,
            "inherit" => role.inherit = on,
            "createrole" => role.createrole = on,
            "createdb" => role.createdb = on,
            "login" => role.login = on,
            "replication" => role.replication = on,
            "bypassrls" => role.bypassrls = on,
            "limit" => {
                if let Some(Token::Word(n)) = t.get(i + 1) {
                    role.connection_limit = n.parse().unwrap_or(-1);
                }
            }
            _ => {}
        }
    }
    Some(role)
}

/// What one statement of a globals script touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Statement {
    /// `CREATE ROLE name`.
    CreateRole(String),
    /// Changes one role everywhere: `ALTER ROLE name …` (not `IN DATABASE`), `COMMENT ON
    /// ROLE name`.
    AlterRole(String),
    /// `GRANT role TO member, …`: memberships of `members`.
    Membership {
        /// The roles granted.
        roles: Vec<String>,
        /// The roles receiving them.
        members: Vec<String>,
    },
    /// About one database, to run once it exists: `ALTER DATABASE`, `GRANT`/`REVOKE … ON
    /// DATABASE`, `ALTER ROLE … IN DATABASE`.
    Database(String),
    /// Session settings (`SET …`), run first.
    Session,
    /// Anything else (tablespaces): run as it is.
    Other,
}

/// Says what a statement of a globals script touches.
pub fn classify(statement: &str) -> Statement {
    let t = tokens(statement);
    let at = |i: usize| t.get(i).cloned().unwrap_or(Token::Other);
    if at(0).is("set") || at(0).is("select") {
        return Statement::Session;
    }
    if at(0).is("create") && (at(1).is("role") || at(1).is("user")) {
        if let Some(name) = at(2).name() {
            return Statement::CreateRole(name);
        }
    }
    if at(0).is("alter") && (at(1).is("role") || at(1).is("user")) {
        if let Some(name) = at(2).name() {
            if at(3).is("in") && at(4).is("database") {
                if let Some(db) = at(5).name() {
                    return Statement::Database(db);
                }
            }
            return Statement::AlterRole(name);
        }
    }
    if at(0).is("comment") && at(1).is("on") && at(2).is("role") {
        if let Some(name) = at(3).name() {
            return Statement::AlterRole(name);
        }
    }
    if at(0).is("alter") && at(1).is("database") {
        if let Some(db) = at(2).name() {
            return Statement::Database(db);
        }
    }
    if at(0).is("grant") || at(0).is("revoke") {
        if let Some(on) = t.iter().position(|x| x.is("on")) {
            if at(on + 1).is("database") {
                if let Some(db) = at(on + 2).name() {
                    return Statement::Database(db);
                }
            }
            return Statement::Other;
        }
        if at(0).is("grant") {
            if let Some(to) = t.iter().position(|x| x.is("to")) {
                let names = |range: &[Token]| -> Vec<String> {
                    range
                        .iter()
                        .take_while(|x| !x.is("with") && !x.is("granted"))
                        .filter_map(Token::name)
                        .collect()
                };
                return Statement::Membership {
                    roles: names(&t[1..to]),
                    members: names(&t[to + 1..]),
                };
            }
        }
    }
    Statement::Other
}

/// A setting as pg_db_role_setting stores it (`name=value`), as the tail of `ALTER … SET`.
/// List settings (`search_path`, …) become one literal per element, as pg_dump writes them.
pub fn set_clause(config: &str) -> String {
    let (name, value) = config.split_once('=').unwrap_or((config, ""));
    let list = matches!(
        name.to_ascii_lowercase().as_str(),
        "search_path"
            | "temp_tablespaces"
            | "session_preload_libraries"
            | "shared_preload_libraries"
            | "local_preload_libraries"
    );
    let values = if list {
        split_list(value)
            .iter()
            .map(|v| literal(v))
            .collect::<Vec<_>>()
            .join(", ")
    } else {
        literal(value)
    };
    format!("SET {} TO {values}", quote_ident(name))
}

/// Elements of a list setting (`"$user", public`), double quotes removed.
fn split_list(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(std::mem::take(&mut cur).trim().to_owned());
            }
            c if c.is_whitespace() && !quoted && cur.is_empty() => {}
            c => cur.push(c),
        }
    }
    if !cur.trim().is_empty() || !out.is_empty() {
        out.push(cur.trim().to_owned());
    }
    out
}

/// An SQL string literal (standard conforming strings, as the script sets them).
pub fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// One privilege on a database: `grantee` `None` for PUBLIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseGrant {
    /// Who holds it; `None` for PUBLIC.
    pub grantee: Option<String>,
    /// `CONNECT`, `CREATE`, `TEMPORARY`.
    pub privilege: String,
    /// `WITH GRANT OPTION`.
    pub grantable: bool,
}

/// What `pg_dump --create` carries of one database beside its contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseGlobals {
    /// The database.
    pub name: String,
    /// Its owner.
    pub owner: String,
    /// Its privileges, or `None` when they are the defaults (`datacl` is null).
    pub grants: Option<Vec<DatabaseGrant>>,
    /// `(role, name=value)`: settings of the database (role `None`) and of roles in it.
    pub settings: Vec<(Option<String>, String)>,
}

impl DatabaseGlobals {
    /// The statements that give a new database of this name its owner, grants and settings.
    pub fn statements(&self) -> Vec<String> {
        let db = sql_ident(&self.name);
        let mut out = vec![format!(
            "ALTER DATABASE {db} OWNER TO {}",
            sql_ident(&self.owner)
        )];
        if let Some(grants) = &self.grants {
            out.push(format!("REVOKE ALL ON DATABASE {db} FROM PUBLIC"));
            out.push(format!(
                "REVOKE ALL ON DATABASE {db} FROM {}",
                sql_ident(&self.owner)
            ));
            for g in grants {
                let to = g.grantee.as_deref().map_or("PUBLIC".to_owned(), sql_ident);
                let option = if g.grantable {
                    " WITH GRANT OPTION"
                } else {
                    ""
                };
                out.push(format!(
                    "GRANT {} ON DATABASE {db} TO {to}{option}",
                    g.privilege
                ));
            }
        }
        for (role, config) in &self.settings {
            match role {
                None => out.push(format!("ALTER DATABASE {db} {}", set_clause(config))),
                Some(role) => out.push(format!(
                    "ALTER ROLE {} IN DATABASE {db} {}",
                    sql_ident(role),
                    set_clause(config)
                )),
            }
        }
        out
    }
}

/// The globals script: pg_dumpall's output, then each database's statements under a comment.
pub fn script(header: &str, dumpall: &str, databases: &[DatabaseGlobals]) -> String {
    let mut out = String::new();
    for line in header.lines() {
        out.push_str("-- ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    out.push_str(dumpall);
    if !dumpall.ends_with('\n') {
        out.push('\n');
    }
    out.push_str("\n--\n-- Databases: owners, grants and settings (what pg_dump --create carries); create each database first\n--\n");
    for db in databases {
        out.push_str(&format!("\n-- database {}\n", sql_ident(&db.name)));
        for s in db.statements() {
            out.push_str(&s);
            out.push_str(";\n");
        }
    }
    out
}

/// Whether `name` matches the glob `pattern` (`*` any run of characters, `?` one character).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Whether `name` is picked by `include` (all when empty) and not by `exclude`.
pub fn picked(name: &str, include: &[String], exclude: &[String]) -> bool {
    (include.is_empty() || include.iter().any(|p| glob_match(p, name)))
        && !exclude.iter().any(|p| glob_match(p, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_split_on_semicolons_outside_quotes_comments_and_dollar_quotes() {
        let script =
            "\\restrict abc\nSET x = 'a;b';\n-- a comment; here\nCREATE ROLE \"we;ird\"\"\";\n\
                      /* block ; /* nested; */ */ COMMENT ON ROLE r IS $q$semi;colon$q$;\n\
                      ALTER ROLE r SET search_path TO E'it\\'s;';\n\\unrestrict abc\nGRANT a TO b";
        assert_eq!(
            split(script),
            vec![
                "SET x = 'a;b'",
                "CREATE ROLE \"we;ird\"\"\"",
                "COMMENT ON ROLE r IS $q$semi;colon$q$",
                "ALTER ROLE r SET search_path TO E'it\\'s;'",
                "GRANT a TO b",
            ]
        );
    }

    #[test]
    fn statements_are_classified_by_what_they_touch() {
        assert_eq!(
            classify("CREATE ROLE \"App Owner\""),
            Statement::CreateRole("App Owner".into())
        );
        assert_eq!(
            classify("ALTER ROLE appowner WITH NOSUPERUSER LOGIN PASSWORD 'x'"),
            Statement::AlterRole("appowner".into())
        );
        assert_eq!(
            classify("ALTER ROLE r IN DATABASE \"Shop\" SET work_mem TO '8MB'"),
            Statement::Database("Shop".into())
        );
        assert_eq!(
            classify("GRANT CONNECT ON DATABASE shop TO reader"),
            Statement::Database("shop".into())
        );
        assert_eq!(
            classify("GRANT readers TO alice, \"Bob\" WITH INHERIT TRUE GRANTED BY postgres"),
            Statement::Membership {
                roles: vec!["readers".into()],
                members: vec!["alice".into(), "Bob".into()],
            }
        );
        assert_eq!(
            classify("CREATE TABLESPACE t OWNER x LOCATION '/x'"),
            Statement::Other
        );
        assert_eq!(classify("SET client_encoding = 'UTF8'"), Statement::Session);
    }

    #[test]
    fn database_statements_carry_owner_grants_and_settings() {
        let db = DatabaseGlobals {
            name: "Shop's".into(),
            owner: "app".into(),
            grants: Some(vec![DatabaseGrant {
                grantee: Some("reader".into()),
                privilege: "CONNECT".into(),
                grantable: false,
            }]),
            settings: vec![
                (None, "search_path=\"$user\", public, \"A b\"".into()),
                (Some("reader".into()), "work_mem=8MB".into()),
            ],
        };
        assert_eq!(
            db.statements(),
            vec![
                "ALTER DATABASE \"Shop's\" OWNER TO \"app\"",
                "REVOKE ALL ON DATABASE \"Shop's\" FROM PUBLIC",
                "REVOKE ALL ON DATABASE \"Shop's\" FROM \"app\"",
                "GRANT CONNECT ON DATABASE \"Shop's\" TO \"reader\"",
                "ALTER DATABASE \"Shop's\" SET search_path TO '$user', 'public', 'A b'",
                "ALTER ROLE \"reader\" IN DATABASE \"Shop's\" SET work_mem TO '8MB'",
            ]
        );
        for s in db.statements() {
            assert_eq!(classify(&s), Statement::Database("Shop's".into()), "{s}");
        }
    }

    #[test]
    fn role_attributes_are_read_from_alter_role() {
        let r = role_attributes(
            "ALTER ROLE \"App\" WITH NOSUPERUSER NOINHERIT CREATEROLE CREATEDB LOGIN NOREPLICATION BYPASSRLS CONNECTION LIMIT 3 PASSWORD 'x'",
        )
        .unwrap();
        assert_eq!(r.name, "App");
        assert!(!r.superuser && !r.inherit && r.createrole && r.createdb && r.login);
        assert!(!r.replication && r.bypassrls);
        assert_eq!(r.connection_limit, 3);
        assert!(role_attributes("ALTER ROLE r IN DATABASE d SET x TO '1'").is_none());
        assert!(role_attributes("CREATE ROLE r").is_none());
        assert!(role_attributes("ALTER ROLE r SET work_mem TO '8MB'").is_none());
    }

    #[test]
    fn globs_pick_databases() {
        assert!(glob_match("app_*", "app_one"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("app_*", "xapp_one"));
        assert!(glob_match("*", ""));
        assert!(picked("shop", &[], &["test*".into()]));
        assert!(!picked("test1", &[], &["test*".into()]));
        assert!(!picked("shop", &["app*".into()], &[]));
    }
}

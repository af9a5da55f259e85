//! Authentication: HTTP Basic credentials checked by an [`Authenticator`]. hostd owns
//! the accounts; its client implements this trait (next step). [`UsersFile`] is a
//! local account list for development runs and tests on a Linux host.

use base64::Engine;

/// hostd's roles, as they limit CIM operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Administrator,
    Operator,
    /// May read; every method invocation and change gets CIM_ERR_ACCESS_DENIED.
    ReadOnly,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s.to_ascii_lowercase().as_str() {
            "administrator" | "admin" => Some(Role::Administrator),
            "operator" => Some(Role::Operator),
            "readonly" | "read-only" => Some(Role::ReadOnly),
            _ => None,
        }
    }
}

/// An authenticated caller. The broker passes it to the back end with every call,
/// so hostd authorizes each change as that user (its session token rides along).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub user: String,
    pub role: Role,
    /// The back end's session for this user (hostd's bearer token), if it has one.
    pub session: Option<String>,
}

impl Principal {
    pub fn new(user: impl Into<String>, role: Role) -> Principal {
        Principal { user: user.into(), role, session: None }
    }
}

/// Outcome of a failed authentication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthError {
    /// Unknown user or wrong password: HTTP 401.
    BadCredentials,
    /// Known user without access to the CIM service (disabled, locked): HTTP 403.
    Forbidden,
    /// The account service could not be reached: HTTP 500.
    Unavailable(String),
}

pub trait Authenticator: Send + Sync {
    /// Checks the credentials; may block (a slow hash, a call to hostd).
    fn authenticate(&self, user: &str, password: &str) -> Result<Principal, AuthError>;

    /// The same answer when it can be given at once without blocking (a session
    /// cached for these exact credentials); None sends the caller to `authenticate`.
    fn authenticate_cached(&self, _user: &str, _password: &str) -> Option<Principal> {
        None
    }
}

/// Decodes an `Authorization: Basic ...` header value into (user, password).
pub fn parse_basic(header: &str) -> Option<(String, String)> {
    let (scheme, rest) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD.decode(rest.trim()).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

/// Constant-time comparison of secrets.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Accounts from a file of `user:role:password` lines (development and tests only:
/// production authentication goes through hostd's account service). The role
/// `disabled` keeps an account that may not use the CIM service (HTTP 403).
pub struct UsersFile {
    users: Vec<(String, Option<Role>, String)>,
}

impl UsersFile {
    pub fn parse(text: &str) -> Result<UsersFile, String> {
        let mut users = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.splitn(3, ':');
            let (Some(u), Some(r), Some(p)) = (parts.next(), parts.next(), parts.next()) else {
                return Err(format!("line {}: expected user:role:password", i + 1));
            };
            let role = if r.eq_ignore_ascii_case("disabled") {
                None
            } else {
                Some(Role::parse(r).ok_or_else(|| format!("line {}: unknown role {r}", i + 1))?)
            };
            if p.is_empty() {
                return Err(format!("line {}: empty password", i + 1));
            }
            users.push((u.to_string(), role, p.to_string()));
        }
        if users.is_empty() {
            return Err("no accounts".into());
        }
        Ok(UsersFile { users })
    }
}

impl Authenticator for UsersFile {
    fn authenticate(&self, user: &str, password: &str) -> Result<Principal, AuthError> {
        let mut found = None;
        for (u, r, p) in &self.users {
            if u == user && ct_eq(p.as_bytes(), password.as_bytes()) {
                found = Some(*r);
            }
        }
        match found {
            Some(Some(role)) => Ok(Principal::new(user, role)),
            Some(None) => Err(AuthError::Forbidden),
            None => Err(AuthError::BadCredentials),
        }
    }

    /// A constant-time comparison in memory: never blocks.
    fn authenticate_cached(&self, user: &str, password: &str) -> Option<Principal> {
        self.authenticate(user, password).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_header_and_users_file() {
        assert_eq!(parse_basic("Basic cm9vdDpzZWNyZXQ="), Some(("root".into(), "secret".into())));
        assert_eq!(parse_basic("Bearer x"), None);
        assert_eq!(parse_basic("Basic !!!"), None);
        let f = UsersFile::parse("# c\nroot:administrator:secret\nro:readonly:pw\nold:disabled:pw\n").unwrap();
        assert_eq!(f.authenticate("old", "pw"), Err(AuthError::Forbidden));
        assert_eq!(f.authenticate("old", "nope"), Err(AuthError::BadCredentials));
        assert_eq!(f.authenticate("root", "secret").map(|p| p.role), Ok(Role::Administrator));
        assert_eq!(f.authenticate("ro", "pw").map(|p| p.role), Ok(Role::ReadOnly));
        assert_eq!(f.authenticate("root", "wrong"), Err(AuthError::BadCredentials));
        assert!(UsersFile::parse("x:boss:pw").is_err());
        assert!(UsersFile::parse("x:admin:").is_err());
    }
}

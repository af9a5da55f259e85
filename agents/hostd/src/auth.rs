//! Local accounts, roles, sessions and login lockout.
//!
//! Accounts live in `users.json` on the config store (argon2id PHC hashes,
//! written atomically). Sessions are in memory: a hostd restart logs
//! everyone out. A session is a random token used either as a bearer token
//! (API clients) or as the `hostd_session` cookie (the browser), where every
//! change must also carry the session's CSRF token in `X-CSRF-Token`.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::store;

/// What a user may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum Role {
    /// Everything, including VM configuration and accounts.
    Administrator,
    /// Power operations and consoles; no configuration.
    Operator,
    /// Reads only.
    ReadOnly,
}

/// Classes of requests, from least to most powerful.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Privilege {
    Read,
    /// Power operations, consoles.
    Operate,
    /// VM configuration, inventory, accounts.
    Configure,
}

impl Role {
    pub fn allows(self, p: Privilege) -> bool {
        let top = match self {
            Role::Administrator => Privilege::Configure,
            Role::Operator => Privilege::Operate,
            Role::ReadOnly => Privilege::Read,
        };
        p <= top
    }

    pub const ALL: [Role; 3] = [Role::Administrator, Role::Operator, Role::ReadOnly];
}

pub const MIN_PASSWORD_LEN: usize = 8;
pub const MAX_PASSWORD_LEN: usize = 256;

/// One account as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UserRecord {
    pub name: String,
    pub role: Role,
    /// argon2id in PHC string form (salted).
    pub password_hash: String,
}

#[derive(Serialize, Deserialize)]
struct UsersFile {
    version: u32,
    users: Vec<UserRecord>,
}

pub fn valid_user_name(n: &str) -> bool {
    !n.is_empty() && n.len() <= 32 && n.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) && !n.starts_with(['.', '-'])
}

pub fn check_password(p: &str) -> Result<(), String> {
    if p.chars().count() < MIN_PASSWORD_LEN {
        return Err(format!("at least {MIN_PASSWORD_LEN} characters"));
    }
    if p.len() > MAX_PASSWORD_LEN {
        return Err(format!("at most {MAX_PASSWORD_LEN} bytes"));
    }
    Ok(())
}

pub fn hash_password(p: &str) -> io::Result<String> {
    let mut salt = [0u8; 16];
    getrandom::getrandom(&mut salt).map_err(io::Error::other)?;
    let salt = SaltString::encode_b64(&salt).map_err(io::Error::other)?;
    Argon2::default().hash_password(p.as_bytes(), &salt).map(|h| h.to_string()).map_err(io::Error::other)
}

fn verify_hash(p: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| Argon2::default().verify_password(p.as_bytes(), &h).is_ok())
}

fn read_users(path: &Path) -> io::Result<Vec<UserRecord>> {
    match std::fs::read(path) {
        Ok(b) => {
            let f: UsersFile = serde_json::from_slice(&b).map_err(|e| io::Error::other(format!("{}: {e}", path.display())))?;
            if f.version != 1 {
                return Err(io::Error::other(format!("{}: version {} unknown", path.display(), f.version)));
            }
            Ok(f.users)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// The account file and its users.
pub struct Accounts {
    path: PathBuf,
    users: Vec<UserRecord>,
    /// Verified against when the user does not exist, so an unknown name
    /// costs as much time as a wrong password.
    dummy_hash: String,
}

impl Accounts {
    /// Loads `users.json` (none yet: no accounts).
    pub fn load(path: &Path) -> io::Result<Accounts> {
        Ok(Accounts { path: path.to_path_buf(), users: read_users(path)?, dummy_hash: hash_password("not-a-password")? })
    }

    /// Reads the file again: `hostd passwd` at the console changes it
    /// behind a running hostd. Returns the users whose password or role
    /// changed or who are gone (their sessions should end). On error the
    /// accounts stay as they were.
    pub fn reload(&mut self) -> io::Result<Vec<String>> {
        let fresh = read_users(&self.path)?;
        let changed = self
            .users
            .iter()
            .filter(|old| !fresh.iter().any(|u| u.name == old.name && u.role == old.role && u.password_hash == old.password_hash))
            .map(|u| u.name.clone())
            .collect();
        self.users = fresh;
        Ok(changed)
    }

    pub fn exists(&self) -> bool {
        self.path.exists()
    }

    fn save(&self) -> io::Result<()> {
        store::write_json_private(&self.path, &UsersFile { version: 1, users: self.users.clone() })
    }

    pub fn users(&self) -> &[UserRecord] {
        &self.users
    }

    pub fn get(&self, name: &str) -> Option<&UserRecord> {
        self.users.iter().find(|u| u.name == name)
    }

    /// The user's role if the password is right.
    pub fn verify(&self, name: &str, password: &str) -> Option<Role> {
        match self.get(name) {
            Some(u) => verify_hash(password, &u.password_hash).then_some(u.role),
            None => {
                let _ = verify_hash(password, &self.dummy_hash);
                None
            }
        }
    }

    /// Adds or replaces an account (hash already made).
    pub fn put(&mut self, rec: UserRecord) -> io::Result<()> {
        // Start from the file: a change made at the console stays.
        self.reload()?;
        let old = self.users.clone();
        match self.users.iter_mut().find(|u| u.name == rec.name) {
            Some(u) => *u = rec,
            None => self.users.push(rec),
        }
        self.save().inspect_err(|_| self.users = old)
    }

    pub fn remove(&mut self, name: &str) -> io::Result<bool> {
        self.reload()?;
        let old = self.users.clone();
        self.users.retain(|u| u.name != name);
        if self.users.len() == old.len() {
            return Ok(false);
        }
        self.save().inspect_err(|_| self.users = old).map(|_| true)
    }

    pub fn administrators(&self) -> usize {
        self.users.iter().filter(|u| u.role == Role::Administrator).count()
    }
}

/// Random hex token (256 bits).
pub fn random_token() -> io::Result<String> {
    let mut b = [0u8; 32];
    getrandom::getrandom(&mut b).map_err(io::Error::other)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A logged-in user.
#[derive(Clone, Debug)]
pub struct Session {
    pub token: String,
    pub csrf: String,
    pub user: String,
    pub role: Role,
    pub created: Instant,
    pub last_used: Instant,
}

pub struct Sessions {
    map: HashMap<String, Session>,
    pub idle: Duration,
    pub max_age: Duration,
    pub max_sessions: usize,
}

impl Sessions {
    pub fn new(idle: Duration) -> Self {
        Sessions { map: HashMap::new(), idle, max_age: Duration::from_secs(12 * 3600).max(idle), max_sessions: 1000 }
    }

    pub fn create(&mut self, user: &str, role: Role) -> io::Result<Session> {
        let now = Instant::now();
        self.expire(now);
        if self.map.len() >= self.max_sessions {
            // Drop the least recently used to stay bounded.
            if let Some(k) = self.map.values().min_by_key(|s| s.last_used).map(|s| s.token.clone()) {
                self.map.remove(&k);
            }
        }
        let s = Session { token: random_token()?, csrf: random_token()?, user: user.into(), role, created: now, last_used: now };
        self.map.insert(s.token.clone(), s.clone());
        Ok(s)
    }

    fn alive(&self, s: &Session, now: Instant) -> bool {
        now.duration_since(s.last_used) < self.idle && now.duration_since(s.created) < self.max_age
    }

    fn expire(&mut self, now: Instant) {
        let (idle, max) = (self.idle, self.max_age);
        self.map.retain(|_, s| now.duration_since(s.last_used) < idle && now.duration_since(s.created) < max);
    }

    /// The live session for a token, touched.
    pub fn get(&mut self, token: &str) -> Option<Session> {
        let now = Instant::now();
        let alive = self.map.get(token).map(|s| self.alive(s, now))?;
        if !alive {
            self.map.remove(token);
            return None;
        }
        let s = self.map.get_mut(token)?;
        s.last_used = now;
        Some(s.clone())
    }

    pub fn remove(&mut self, token: &str) {
        self.map.remove(token);
    }

    /// Ends every session of a user (password or role changed, user removed).
    pub fn remove_user(&mut self, user: &str) {
        self.map.retain(|_, s| s.user != user);
    }
}

/// Failed-login counting per user name.
pub struct Lockout {
    failures: HashMap<String, (u32, Option<Instant>)>,
    pub max_failures: u32,
    pub duration: Duration,
}

impl Lockout {
    pub fn new(max_failures: u32, duration: Duration) -> Self {
        Lockout { failures: HashMap::new(), max_failures, duration }
    }

    /// Seconds left if the name is locked.
    pub fn locked(&mut self, name: &str) -> Option<u64> {
        let now = Instant::now();
        let (_, until) = self.failures.get(name)?;
        match until {
            Some(t) if *t > now => Some(t.duration_since(now).as_secs().max(1)),
            Some(_) => {
                self.failures.remove(name);
                None
            }
            None => None,
        }
    }

    /// Counts a failure; true if this one locked the account.
    pub fn failed(&mut self, name: &str) -> bool {
        if self.failures.len() > 10_000 {
            // Bounded memory under a flood of invented names: keep only locks.
            self.failures.retain(|_, (_, until)| until.is_some());
        }
        let e = self.failures.entry(name.to_string()).or_insert((0, None));
        e.0 += 1;
        if e.0 >= self.max_failures && e.1.is_none() {
            e.1 = Some(Instant::now() + self.duration);
            return true;
        }
        false
    }

    pub fn succeeded(&mut self, name: &str) {
        self.failures.remove(name);
    }

    pub fn clear(&mut self, name: &str) {
        self.failures.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_nest() {
        assert!(Role::Administrator.allows(Privilege::Configure));
        assert!(Role::Operator.allows(Privilege::Operate) && !Role::Operator.allows(Privilege::Configure));
        assert!(Role::ReadOnly.allows(Privilege::Read) && !Role::ReadOnly.allows(Privilege::Operate));
    }

    #[test]
    fn accounts_persist_with_salted_hashes() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("users.json");
        let mut a = Accounts::load(&p).unwrap();
        assert!(!a.exists());
        a.put(UserRecord { name: "root".into(), role: Role::Administrator, password_hash: hash_password("s3cret-pw").unwrap() }).unwrap();
        a.put(UserRecord { name: "op".into(), role: Role::Operator, password_hash: hash_password("s3cret-pw").unwrap() }).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(!text.contains("s3cret-pw") && text.contains("$argon2id$"));
        let a = Accounts::load(&p).unwrap();
        assert_eq!(a.verify("root", "s3cret-pw"), Some(Role::Administrator));
        assert_eq!(a.verify("root", "wrong"), None);
        assert_eq!(a.verify("nobody", "s3cret-pw"), None);
        // Same password, different salt.
        assert_ne!(a.get("root").unwrap().password_hash, a.get("op").unwrap().password_hash);
    }

    #[test]
    fn reload_sees_changes_made_behind_its_back() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("users.json");
        let mut running = Accounts::load(&p).unwrap();
        assert_eq!(running.verify("root", "first-pw-1"), None);
        // `hostd passwd root` at the console: another Accounts on the same file.
        let mut console = Accounts::load(&p).unwrap();
        console.put(UserRecord { name: "root".into(), role: Role::Administrator, password_hash: hash_password("first-pw-1").unwrap() }).unwrap();
        assert_eq!(running.reload().unwrap(), Vec::<String>::new());
        assert_eq!(running.verify("root", "first-pw-1"), Some(Role::Administrator));
        // A change through the running one keeps what the console wrote.
        running.put(UserRecord { name: "op".into(), role: Role::Operator, password_hash: hash_password("op-pw-123").unwrap() }).unwrap();
        console.put(UserRecord { name: "root".into(), role: Role::Administrator, password_hash: hash_password("second-pw-2").unwrap() }).unwrap();
        assert_eq!(console.get("op").map(|u| u.role), Some(Role::Operator));
        assert_eq!(running.reload().unwrap(), vec!["root".to_string()]);
        assert_eq!(running.verify("root", "first-pw-1"), None);
        assert_eq!(running.verify("root", "second-pw-2"), Some(Role::Administrator));
        // A damaged file changes nothing.
        std::fs::write(&p, b"{").unwrap();
        assert!(running.reload().is_err());
        assert_eq!(running.verify("root", "second-pw-2"), Some(Role::Administrator));
    }

    #[test]
    fn sessions_expire_when_idle() {
        let mut s = Sessions::new(Duration::from_millis(50));
        let x = s.create("root", Role::Administrator).unwrap();
        assert!(s.get(&x.token).is_some());
        std::thread::sleep(Duration::from_millis(80));
        assert!(s.get(&x.token).is_none());
    }

    #[test]
    fn lockout_after_max_failures() {
        let mut l = Lockout::new(5, Duration::from_secs(60));
        for _ in 0..4 {
            assert!(!l.failed("root"));
        }
        assert!(l.locked("root").is_none());
        assert!(l.failed("root"));
        assert!(l.locked("root").is_some());
        assert!(l.locked("other").is_none());
        l.clear("root");
        assert!(l.locked("root").is_none());
    }
}

//! Tokens, passwords and who is calling.
//!
//! Tokens are Ed25519-signed JWTs (`{"typ":"JWT","alg":"EdDSA"}`, claims `sub`, `exp`,
//! `sign`, `kind`) wrapped once more in standard base64, as the peer issues them plus the
//! `kind` claim (`user` or `worker`), which keeps a user named like a worker's uuid from
//! acting as that worker:
//!
//! ```ignore
//! # use mito::coordinator::auth::Keys;
//! # use std::time::Duration;
//! let keys = Keys::load("private.pem".as_ref(), "public.pem".as_ref()).unwrap();
//! let token = keys.issue("alice", Duration::from_secs(3600), 42);
//! assert_eq!(keys.verify(&token).unwrap().sub, "alice");
//! ```
//!
//! Passwords arrive as md5 digests (the peer's protocol); only an argon2id hash of that
//! digest is stored. `sign` is the per-user signature that revokes tokens when it changes.

use super::error::ApiError;
use super::http::Call;
use crate::api::{Md5Password, UserState};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use ct_codecs::{Base64, Base64UrlSafeNoPadding, Decoder, Encoder};
use ed25519_compact::{PublicKey, SecretKey, Signature};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const HEADER: &str = r#"{"typ":"JWT","alg":"EdDSA"}"#;
/// Clock skew tolerated on `exp` when verifying a signature, as the peer does.
const LEEWAY_SECS: u64 = 60;

/// The token claims, in the peer's order, then `kind`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Claims {
    pub sub: String,
    pub exp: u64,
    pub sign: i64,
    /// Absent in tokens issued before tokens had a kind; see [`Claims::kind`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<TokenKind>,
}

/// Whom a token speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum TokenKind {
    User,
    Worker,
}

impl Claims {
    /// The token's kind. A token from before the `kind` claim is told apart by `sign`,
    /// unambiguously: worker tokens always carried 0, user tokens the user's signature,
    /// which is never 0 (see [`new_signature`]).
    pub(crate) fn kind(&self) -> TokenKind {
        match self.kind {
            Some(k) => k,
            None if self.sign == 0 => TokenKind::Worker,
            None => TokenKind::User,
        }
    }
}

/// The coordinator's signing key pair.
#[derive(Clone)]
pub struct Keys {
    secret: SecretKey,
    public: PublicKey,
}

/// Why the token signing keys cannot be used; every message says how to make a pair.
#[derive(Debug)]
pub enum KeyError {
    /// `which` is "private" or "public".
    Read {
        which: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    NotPrivateKey {
        path: PathBuf,
        message: String,
    },
    NotPublicKey {
        path: PathBuf,
        message: String,
    },
    /// The public key is not the private key's.
    NotAPair {
        private: PathBuf,
        public: PathBuf,
    },
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyError::Read { which, path, source } => {
                write!(f, "cannot read the {which} key {}: {source}\n{}", path.display(), openssl_hint())
            }
            KeyError::NotPrivateKey { path, message } => write!(
                f,
                "{} is not an Ed25519 private key in PEM (PKCS#8) form: {message}\n{}",
                path.display(),
                openssl_hint()
            ),
            KeyError::NotPublicKey { path, message } => {
                write!(f, "{} is not an Ed25519 public key in PEM form: {message}\n{}", path.display(), openssl_hint())
            }
            KeyError::NotAPair { private, public } => write!(
                f,
                "{} and {} are not a key pair: regenerate the public key with\n  openssl pkey -in {} -pubout -out {}",
                private.display(),
                public.display(),
                private.display(),
                public.display()
            ),
        }
    }
}

impl std::error::Error for KeyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            KeyError::Read { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn openssl_hint() -> &'static str {
    "generate a key pair with:\n  openssl genpkey -algorithm ed25519 -out private.pem\n  openssl pkey -in private.pem -pubout -out public.pem\nthen point access_token_private_path / access_token_public_path at them"
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Keys {
    /// Reads the two PEM files; the error explains how to make them.
    pub fn load(private: &Path, public: &Path) -> Result<Keys, KeyError> {
        let read = |path: &Path, which: &'static str| {
            std::fs::read_to_string(path).map_err(|source| KeyError::Read { which, path: path.into(), source })
        };
        let secret = SecretKey::from_pem(&read(private, "private")?)
            .map_err(|e| KeyError::NotPrivateKey { path: private.into(), message: e.to_string() })?;
        let public_key = PublicKey::from_pem(&read(public, "public")?)
            .map_err(|e| KeyError::NotPublicKey { path: public.into(), message: e.to_string() })?;
        if secret.public_key() != public_key {
            return Err(KeyError::NotAPair { private: private.into(), public: public.into() });
        }
        Ok(Keys { secret, public: public_key })
    }

    /// A secret derived from the signing key and `purpose`: the same on every replica that
    /// shares the key, unguessable without it (Ed25519 signatures are deterministic).
    pub(crate) fn derive_secret(&self, purpose: &str) -> String {
        let sig = self.secret.sign(format!("mito derived secret: {purpose}").as_bytes(), None);
        sig.as_ref()[..24].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// An Ed25519 signature of `msg` (the local object store signs its URLs with it).
    pub(crate) fn sign_bytes(&self, msg: &[u8]) -> [u8; 64] {
        *self.secret.sign(msg, None)
    }

    /// Whether `sig` is our signature of `msg`.
    pub(crate) fn verify_bytes(&self, msg: &[u8], sig: &[u8]) -> bool {
        Signature::from_slice(sig).is_ok_and(|s| self.public.verify(msg, &s).is_ok())
    }

    /// Issues a user token for `sub`, valid for `ttl`, carrying signature `sign`.
    pub(crate) fn issue(&self, sub: &str, ttl: Duration, sign: i64) -> String {
        self.issue_as(TokenKind::User, sub, ttl, sign)
    }

    /// Issues a worker token for the worker `uuid`, valid for `ttl`.
    pub(crate) fn issue_worker(&self, uuid: uuid::Uuid, ttl: Duration) -> String {
        self.issue_as(TokenKind::Worker, &uuid.to_string(), ttl, 0)
    }

    fn issue_as(&self, kind: TokenKind, sub: &str, ttl: Duration, sign: i64) -> String {
        let exp = now_secs().saturating_add(ttl.as_secs());
        let claims = Claims { sub: sub.to_string(), exp, sign, kind: Some(kind) };
        let claims_json = serde_json::to_string(&claims).expect("claims serialize");
        let enc = |b: &[u8]| Base64UrlSafeNoPadding::encode_to_string(b).expect("base64 of a small buffer");
        let signing_input = format!("{}.{}", enc(HEADER.as_bytes()), enc(claims_json.as_bytes()));
        let sig = self.secret.sign(signing_input.as_bytes(), None);
        let jwt = format!("{signing_input}.{}", enc(sig.as_ref()));
        Base64::encode_to_string(jwt.as_bytes()).expect("base64 of a small buffer")
    }

    /// Checks signature and expiry (with 60 s leeway); any failure is `InvalidToken`.
    pub(crate) fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        let bad = |_| ApiError::InvalidToken;
        let jwt = Base64::decode_to_vec(token.trim(), None).map_err(bad)?;
        let jwt = std::str::from_utf8(&jwt).map_err(|_| ApiError::InvalidToken)?;
        let mut parts = jwt.split('.');
        let (Some(h), Some(c), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(ApiError::InvalidToken);
        };
        let sig = Base64UrlSafeNoPadding::decode_to_vec(s, None).map_err(bad)?;
        let sig = Signature::from_slice(&sig).map_err(|_| ApiError::InvalidToken)?;
        let signing_input = &jwt[..h.len() + 1 + c.len()];
        self.public.verify(signing_input, &sig).map_err(|_| ApiError::InvalidToken)?;
        let header = Base64UrlSafeNoPadding::decode_to_vec(h, None).map_err(bad)?;
        let header: serde_json::Value = serde_json::from_slice(&header).map_err(|_| ApiError::InvalidToken)?;
        if header.get("alg").and_then(|a| a.as_str()) != Some("EdDSA") {
            return Err(ApiError::InvalidToken);
        }
        let claims = Base64UrlSafeNoPadding::decode_to_vec(c, None).map_err(bad)?;
        let claims: Claims = serde_json::from_slice(&claims).map_err(|_| ApiError::InvalidToken)?;
        if claims.exp.saturating_add(LEEWAY_SECS) < now_secs() {
            return Err(ApiError::InvalidToken);
        }
        Ok(claims)
    }
}

/// Tokens whose signature already checked out, so a worker's every request costs no
/// Ed25519 verification (it was ~15% of the coordinator's CPU under load). Only the
/// signature check is remembered: expiry is checked on every use, and revocation is the
/// database's business as before.
pub(crate) struct TokenCache {
    verified: std::sync::Mutex<std::collections::HashMap<String, Claims, TokenHashing>>,
}

/// How the cache hashes tokens: a word at a time with a multiply and a rotate, about a
/// tenth of the cost of the standard keyed hash (which cost ~1,000 instructions a request
/// for a token of a few hundred bytes). A keyed hash defends a map against keys chosen to
/// collide; only tokens whose signature verified enter this one, and we issued those.
type TokenHashing = std::hash::BuildHasherDefault<TokenHasher>;

#[derive(Default)]
pub(crate) struct TokenHasher(u64);

impl std::hash::Hasher for TokenHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            self.add(u64::from_le_bytes(w.try_into().expect("chunks of 8")));
        }
        let mut last = [0u8; 8];
        last[..words.remainder().len()].copy_from_slice(words.remainder());
        self.add(u64::from_le_bytes(last) ^ bytes.len() as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl TokenHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// Tokens remembered at most; when full, the cache starts over (cheaper than tracking
/// use, and a full cache means more callers than this bound, not a steady state).
const TOKEN_CACHE_SIZE: usize = 1024;

impl Default for TokenCache {
    fn default() -> Self {
        TokenCache { verified: std::sync::Mutex::new(std::collections::HashMap::default()) }
    }
}

impl TokenCache {
    /// [`Keys::verify`], remembering tokens that pass.
    pub(crate) fn verify(&self, keys: &Keys, token: &str) -> Result<Claims, ApiError> {
        let hit = self.verified.lock().ok().and_then(|m| m.get(token).cloned());
        let claims = match hit {
            Some(c) => c,
            None => {
                let c = keys.verify(token)?;
                if let Ok(mut m) = self.verified.lock() {
                    if m.len() >= TOKEN_CACHE_SIZE {
                        m.clear();
                    }
                    m.insert(token.to_string(), c.clone());
                }
                c
            }
        };
        if claims.exp.saturating_add(LEEWAY_SECS) < now_secs() {
            return Err(ApiError::InvalidToken);
        }
        Ok(claims)
    }
}

/// A random signature in 1..=2^32, so a fresh one never equals the "none yet" state.
pub(crate) fn new_signature() -> i64 {
    let (a, _) = uuid::Uuid::new_v4().as_u64_pair();
    1 + i64::from(a as u32)
}

/// The argon2id hash (PHC string) of an md5 password digest.
pub(crate) fn hash_password(md5: &Md5Password) -> Result<String, ApiError> {
    let salt = SaltString::encode_b64(uuid::Uuid::new_v4().as_bytes())
        .map_err(|e| ApiError::Internal(format!("salt: {e}")))?;
    let hash = Argon2::default()
        .hash_password(md5, &salt)
        .map(|h| h.to_string())
        .map_err(|e| ApiError::Internal(format!("password hash: {e}")));
    super::release_freed_memory();
    hash
}

/// Whether `md5` matches the stored hash.
pub(crate) fn verify_password(stored: &str, md5: &Md5Password) -> bool {
    let ok = match PasswordHash::new(stored) {
        Ok(h) => Argon2::default().verify_password(md5, &h).is_ok(),
        Err(_) => false,
    };
    // Each check briefly uses ~19 MiB; give it back rather than keep it resident.
    super::release_freed_memory();
    ok
}

/// A hash of no one's password, with the parameters of real ones: checking a login for an
/// unknown user against it costs what checking a real user's does, so the answer's timing
/// does not tell whether the user exists.
pub(crate) fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        let random: [u8; 16] = *uuid::Uuid::new_v4().as_bytes();
        hash_password(&random).unwrap_or_default()
    })
}

/// Whether `md5` matches `stored`; without a stored hash (no such user) the same work is
/// done against [`dummy_hash`] and the answer is false.
pub(crate) fn verify_password_timed(stored: Option<&str>, md5: &Md5Password) -> bool {
    match stored {
        Some(h) => verify_password(h, md5),
        None => {
            verify_password(dummy_hash(), md5);
            false
        }
    }
}

/// The bearer token of a request: 400 when the header is missing or not `Bearer`.
pub(crate) fn bearer(call: &Call) -> Result<String, ApiError> {
    let value = call.header("Authorization").ok_or(ApiError::MissingAuthHeader)?;
    let value = value.trim();
    if value.eq_ignore_ascii_case("bearer") {
        // `Bearer ` with nothing after it: a token that fails verification, as the peer has it.
        return Ok(String::new());
    }
    let (scheme, token) = value.split_once(' ').ok_or(ApiError::BadAuthHeader)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::BadAuthHeader);
    }
    Ok(token.trim().to_string())
}

/// Compares secrets without an early exit, so the time taken tells nothing of where they
/// differ (only whether their lengths do).
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A signed-in user.
#[derive(Debug, Clone)]
pub(crate) struct AuthUser {
    pub id: i64,
    pub username: String,
    pub admin: bool,
}

/// A token past its expiry (within the leeway [`Keys::verify`] grants) is refused as
/// wrong credentials, which tells a client to sign in again.
pub(crate) fn unexpired(claims: &Claims) -> Result<(), ApiError> {
    if claims.exp < now_secs() {
        return Err(ApiError::WrongCredentials);
    }
    Ok(())
}

/// Checks a user token against the database: the user exists, is Active, and the token's
/// signature is current (otherwise it was revoked by a login or a password change).
pub(crate) fn authenticate_user(
    db: &mut super::db::Conn,
    claims: &Claims,
    need_admin: bool,
) -> Result<AuthUser, ApiError> {
    unexpired(claims)?;
    if claims.kind() != TokenKind::User {
        return Err(ApiError::WrongCredentials);
    }
    let st = db.prepared("SELECT id, admin, state, auth_signature FROM users WHERE username = $1")?;
    let row = db.query_opt(&st, &[&claims.sub])?;
    let row = row.ok_or(ApiError::WrongCredentials)?;
    let admin: bool = row.get("admin");
    if need_admin && !admin {
        return Err(ApiError::PermissionDenied);
    }
    if UserState::from_code(row.get("state")) != Some(UserState::Active) {
        return Err(ApiError::PermissionDenied);
    }
    if row.get::<_, Option<i64>>("auth_signature") != Some(claims.sign) {
        return Err(ApiError::WrongCredentials);
    }
    Ok(AuthUser { id: row.get("id"), username: claims.sub.clone(), admin })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_compact::KeyPair;

    fn keys() -> Keys {
        let kp = KeyPair::generate();
        Keys { secret: kp.sk, public: kp.pk }
    }

    #[test]
    fn issued_tokens_verify_and_tampered_ones_do_not() {
        let k = keys();
        let t = k.issue("alice", Duration::from_secs(60), 7);
        let c = k.verify(&t).unwrap();
        assert_eq!((c.sub.as_str(), c.sign), ("alice", 7));
        assert!(k.verify(&keys().issue("alice", Duration::from_secs(60), 7)).is_err());
        let mut bytes = t.into_bytes();
        let i = bytes.len() / 2;
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        assert!(k.verify(&String::from_utf8(bytes).unwrap()).is_err());
        assert!(k.verify("not a token").is_err());
        assert!(k.verify("").is_err());
    }

    #[test]
    fn expired_tokens_are_invalid_after_the_leeway() {
        let k = keys();
        let claims = Claims { sub: "a".into(), exp: now_secs() - 120, sign: 0, kind: None };
        let enc = |b: &[u8]| Base64UrlSafeNoPadding::encode_to_string(b).unwrap();
        let input = format!("{}.{}", enc(HEADER.as_bytes()), enc(serde_json::to_string(&claims).unwrap().as_bytes()));
        let sig = k.secret.sign(input.as_bytes(), None);
        let t = Base64::encode_to_string(format!("{input}.{}", enc(sig.as_ref()))).unwrap();
        assert!(matches!(k.verify(&t), Err(ApiError::InvalidToken)));
    }

    #[test]
    fn the_token_cache_skips_the_signature_check_but_never_the_expiry() {
        let (k, cache) = (keys(), TokenCache::default());
        let t = k.issue("alice", Duration::from_secs(60), 7);
        assert_eq!(cache.verify(&k, &t).unwrap().sub, "alice");
        assert_eq!(cache.verify(&k, &t).unwrap().sign, 7);
        assert!(cache.verify(&k, "not a token").is_err());
        assert!(cache.verify(&k, &keys().issue("alice", Duration::from_secs(60), 7)).is_err(), "another key's token");
        assert_eq!(cache.verified.lock().unwrap().len(), 1, "only tokens that verified are kept");
        // A remembered token past its expiry (and the leeway) is refused all the same.
        let stale = Claims { sub: "bob".into(), exp: now_secs() - LEEWAY_SECS - 1, sign: 1, kind: None };
        cache.verified.lock().unwrap().insert("stale".into(), stale);
        assert!(matches!(cache.verify(&k, "stale"), Err(ApiError::InvalidToken)));
        // A full cache starts over rather than grow.
        {
            let mut m = cache.verified.lock().unwrap();
            m.clear();
            for i in 0..TOKEN_CACHE_SIZE {
                m.insert(format!("t{i}"), Claims { sub: "c".into(), exp: u64::MAX / 2, sign: 0, kind: None });
            }
        }
        cache.verify(&k, &t).unwrap();
        assert_eq!(cache.verified.lock().unwrap().len(), 1);
    }

    #[test]
    fn tokens_carry_their_kind_and_old_ones_are_told_apart_by_sign() {
        let k = keys();
        let u = k.verify(&k.issue("alice", Duration::from_secs(60), 7)).unwrap();
        assert_eq!((u.kind, u.kind()), (Some(TokenKind::User), TokenKind::User));
        let id = uuid::Uuid::new_v4();
        let w = k.verify(&k.issue_worker(id, Duration::from_secs(60))).unwrap();
        assert_eq!((w.sub.as_str(), w.kind()), (id.to_string().as_str(), TokenKind::Worker));
        let old = |sign| Claims { sub: id.to_string(), exp: now_secs() + 60, sign, kind: None };
        assert_eq!(old(0).kind(), TokenKind::Worker);
        assert_eq!(old(9).kind(), TokenKind::User);
        assert!(WorkerToken::from_claims(&old(9)).is_err(), "a user's token never acts as a worker");
        assert!(WorkerToken::from_claims(&old(0)).is_ok(), "an old worker token keeps working");
    }

    #[test]
    fn passwords_hash_and_verify() {
        let h = hash_password(&[1; 16]).unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password(&h, &[1; 16]));
        assert!(!verify_password(&h, &[2; 16]));
        assert!(!verify_password("garbage", &[1; 16]));
    }

    #[test]
    fn signatures_are_never_zero() {
        for _ in 0..100 {
            assert!(new_signature() >= 1);
        }
    }
}

/// A registered worker, identified by its token.
#[derive(Debug, Clone)]
pub(crate) struct AuthWorker {
    pub id: i64,
    pub uuid: uuid::Uuid,
}

/// A worker token whose signature and expiry checked out, before the database confirms the
/// worker still exists. The busiest routes (fetch, report, heartbeat) do that in the same
/// statement that does their work, saving a round trip per request; the others call
/// [`authenticate_worker`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct WorkerToken {
    pub uuid: uuid::Uuid,
}

impl WorkerToken {
    pub(crate) fn from_claims(claims: &Claims) -> Result<WorkerToken, ApiError> {
        if claims.kind() != TokenKind::Worker {
            return Err(ApiError::WrongCredentials);
        }
        let uuid: uuid::Uuid = claims.sub.parse().map_err(|_| ApiError::InvalidToken)?;
        // A worker's lifetime is its token's: honour it to the second.
        if claims.exp < now_secs() {
            return Err(ApiError::WrongCredentials);
        }
        Ok(WorkerToken { uuid })
    }
}

/// Checks that a worker token's worker still exists (removed workers get 401, which tells
/// them to exit).
pub(crate) fn authenticate_worker(db: &mut super::db::Conn, token: WorkerToken) -> Result<AuthWorker, ApiError> {
    let st = db.prepared("SELECT id FROM workers WHERE worker_id = $1")?;
    let row = db.query_opt(&st, &[&token.uuid])?.ok_or(ApiError::WrongCredentials)?;
    Ok(AuthWorker { id: row.get("id"), uuid: token.uuid })
}

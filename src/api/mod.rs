//! Wire types shared by the coordinator, the worker and the client.
//!
//! Every struct here is the JSON shape of the mitosis 0.6 HTTP API, with the exact field
//! names, enum spellings and scalar encodings that its clients, workers and SDKs expect:
//!
//! ```
//! let req: mito::api::UserLoginReq =
//!     serde_json::from_str(r#"{"username":"a","md5_password":[0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15]}"#).unwrap();
//! assert!(!req.retain);
//! ```
//!
//! Scalar encodings (timestamps, durations) live in [`time`]; enums with their accepted
//! aliases in [`enums`].

pub mod array;
pub mod enums;
pub mod quota;
pub mod time;
mod types;

pub use enums::*;
pub use time::Timestamp;
pub use types::*;

/// The body of every application error: `{"msg": "..."}`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ErrorMsg {
    pub msg: String,
}

/// Sent with `true` by a worker registering (`POST /workers`) to say it confirms each task
/// it is handed (by its next heartbeat or report), so the coordinator may put back a task
/// it does not confirm within the claim lease. A header, not a body field, so a mitosis
/// coordinator simply ignores it; mitosis workers never send it and keep unleased claims.
pub const CONFIRMS_CLAIMS_HEADER: &str = "X-Mito-Confirms-Claims";

/// md5 of a password, as the client sends it (a JSON array of 16 integers).
pub type Md5Password = [u8; 16];

/// The md5 digest the client sends instead of the plaintext password.
pub fn md5_password(password: &str) -> Md5Password {
    md5::compute(password.as_bytes()).0
}

/// Checks a user or group name: 1 to 255 bytes of ASCII letters, digits, `-` and `_`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 255 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_alphabet_and_length_rule() {
        assert!(valid_name("alice_01-x"));
        assert!(!valid_name(""));
        assert!(!valid_name("a b"));
        assert!(!valid_name("a/b"));
        assert!(!valid_name("é"));
        assert!(valid_name(&"a".repeat(255)));
        assert!(!valid_name(&"a".repeat(256)));
    }

    #[test]
    fn md5_matches_the_known_digest() {
        // md5("") = d41d8cd98f00b204e9800998ecf8427e
        let d = md5_password("");
        assert_eq!(d[0], 0xd4);
        assert_eq!(d[15], 0x7e);
    }
}

//! The API's enums: their JSON spellings (and the aliases accepted on input) and the
//! integer each is stored as in the database.
//!
//! ```
//! use mito::api::UserGroupRole;
//! let r: UserGroupRole = serde_json::from_str("\"write\"").unwrap();
//! assert_eq!(r, UserGroupRole::Write);
//! assert_eq!(serde_json::to_string(&r).unwrap(), "\"Write\"");
//! assert_eq!(r.code(), 1);
//! ```

/// A spelling that names no variant of the wire enum `kind`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownVariant {
    /// The enum's name, e.g. `TaskState`.
    pub kind: &'static str,
    pub given: String,
    /// The accepted spellings, comma-separated.
    pub expected: String,
}

impl std::fmt::Display for UnknownVariant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unknown {} {:?}: expected one of {}", self.kind, self.given, self.expected)
    }
}

impl std::error::Error for UnknownVariant {}

macro_rules! wire_enum {
    ($(#[$m:meta])* $name:ident { $($var:ident = $code:literal => $canon:literal $(| $alias:literal)*),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($var),+ }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$var),+];

            /// The integer stored in the database.
            pub fn code(self) -> i32 {
                match self { $($name::$var => $code),+ }
            }

            /// The variant stored as `code`, if any.
            pub fn from_code(code: i32) -> Option<Self> {
                match code { $($code => Some($name::$var),)+ _ => None }
            }

            /// The JSON spelling.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$var => $canon),+ }
            }

            /// Parses the JSON spelling or one of its aliases.
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($canon $(| $alias)* => Some($name::$var),)+ _ => None }
            }

            /// The accepted spellings, for error messages.
            pub fn expected() -> String {
                [$($canon),+].join(", ")
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = UnknownVariant;
            fn from_str(s: &str) -> Result<Self, UnknownVariant> {
                Self::parse(s).ok_or_else(|| UnknownVariant {
                    kind: stringify!($name),
                    given: s.to_string(),
                    expected: Self::expected(),
                })
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

wire_enum!(
    /// A user account's state; only Active users may log in.
    UserState { Active = 0 => "Active", Locked = 1 => "Locked", Deleted = 2 => "Deleted" }
);

wire_enum!(
    /// A group's state; only Active groups accept uploads.
    GroupState { Active = 0 => "Active", Locked = 1 => "Locked", Deleted = 2 => "Deleted" }
);

wire_enum!(
    /// A worker's state.
    WorkerState { Normal = 0 => "Normal", GracefulShutdown = 1 => "GracefulShutdown" }
);

wire_enum!(
    /// A task's state, with the codes mitosis 0.6 stores.
    TaskState {
        Pending = 0 => "Pending",
        Ready = 1 => "Ready",
        Running = 2 => "Running",
        Finished = 3 => "Finished",
        Cancelled = 4 => "Cancelled",
        Unknown = 5 => "Unknown",
    }
);

wire_enum!(
    /// A user's role in a group, ordered Read < Write < Admin.
    UserGroupRole {
        Read = 0 => "Read" | "read" | "READ",
        Write = 1 => "Write" | "write" | "WRITE",
        Admin = 2 => "Admin" | "admin" | "ADMIN",
    }
);

wire_enum!(
    /// A group's role on a worker: Read (reserved), Write (its tasks run there), Admin (manages it).
    GroupWorkerRole {
        Read = 0 => "Read" | "read" | "READ",
        Write = 1 => "Write" | "write" | "WRITE",
        Admin = 2 => "Admin" | "admin" | "ADMIN",
    }
);

wire_enum!(
    /// How to stop a worker.
    WorkerShutdownOp { Graceful = 0 => "Graceful" | "graceful", Force = 1 => "Force" | "force" }
);

wire_enum!(
    /// The only content type attachments have.
    AttachmentContentType { NoSet = 0 => "NoSet" }
);

wire_enum!(
    /// The three kinds of task artifact.
    ArtifactContentType {
        Result = 0 => "result" | "Result" | "RESULT",
        ExecLog = 1 => "exec-log" | "exec" | "EXEC" | "Exec" | "execlog" | "EXECLOG" | "Execlog" | "ExecLog",
        StdLog = 2 => "std-log" | "std" | "STD" | "Std" | "stdlog" | "Stdlog" | "STDLOG" | "terminal" | "Terminal" | "TERMINAL",
    }
);

impl ArtifactContentType {
    /// The archive's file name, also the last segment of its object key.
    pub fn file_name(self) -> &'static str {
        match self {
            ArtifactContentType::Result => "result.tar.gz",
            ArtifactContentType::ExecLog => "exec-log.tar.gz",
            ArtifactContentType::StdLog => "std-log.tar.gz",
        }
    }
}

wire_enum!(
    /// Why a task ended other than by a clean finish.
    TaskResultMessage {
        FetchResourceTimeout = 0 => "FetchResourceTimeout",
        ExecTimeout = 1 => "ExecTimeout",
        UploadResultTimeout = 2 => "UploadResultTimeout",
        ResourceNotFound = 3 => "ResourceNotFound",
        ResourceForbidden = 4 => "ResourceForbidden",
        WatchTimeout = 5 => "WatchTimeout",
        UserCancellation = 6 => "UserCancellation",
        SubmitNewTaskFailed = 7 => "SubmitNewTaskFailed",
    }
);

wire_enum!(
    /// A task's execution phase on its worker, published to Redis as the integer code.
    TaskExecState {
        WorkerExited = -1 => "WorkerExited",
        FetchResource = 1 => "FetchResource",
        FetchResourceFinished = 2 => "FetchResourceFinished",
        FetchResourceError = 3 => "FetchResourceError",
        FetchResourceTimeout = 4 => "FetchResourceTimeout",
        FetchResourceNotFound = 5 => "FetchResourceNotFound",
        FetchResourceForbidden = 6 => "FetchResourceForbidden",
        Watch = 7 => "Watch",
        WatchFinished = 8 => "WatchFinished",
        WatchTimeout = 9 => "WatchTimeout",
        ExecPending = 10 => "ExecPending",
        ExecSpawned = 11 => "ExecSpawned",
        ExecFinished = 12 => "ExecFinished",
        ExecTimeout = 13 => "ExecTimeout",
        UploadResult = 14 => "UploadResult",
        UploadFinishedResult = 15 => "UploadFinishedResult",
        UploadCancelledResult = 16 => "UploadCancelledResult",
        UploadResultFinished = 17 => "UploadResultFinished",
        UploadResultTimeout = 18 => "UploadResultTimeout",
        TaskCommitted = 19 => "TaskCommitted",
        Unknown = -99 => "Unknown",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_accept_aliases() {
        assert!(UserGroupRole::Read < UserGroupRole::Write);
        assert!(UserGroupRole::Write < UserGroupRole::Admin);
        for s in ["\"admin\"", "\"ADMIN\"", "\"Admin\""] {
            assert_eq!(serde_json::from_str::<UserGroupRole>(s).unwrap(), UserGroupRole::Admin);
        }
        assert!(serde_json::from_str::<UserGroupRole>("\"aDmin\"").is_err());
    }

    #[test]
    fn task_state_is_exact_case_only() {
        assert!(serde_json::from_str::<TaskState>("\"ready\"").is_err());
        assert_eq!(serde_json::from_str::<TaskState>("\"Ready\"").unwrap(), TaskState::Ready);
    }

    #[test]
    fn artifact_types_use_kebab_case_and_aliases() {
        assert_eq!(serde_json::to_string(&ArtifactContentType::ExecLog).unwrap(), "\"exec-log\"");
        assert_eq!(ArtifactContentType::parse("terminal"), Some(ArtifactContentType::StdLog));
        assert_eq!(ArtifactContentType::StdLog.file_name(), "std-log.tar.gz");
    }

    #[test]
    fn codes_round_trip() {
        for s in TaskExecState::ALL {
            assert_eq!(TaskExecState::from_code(s.code()), Some(*s));
        }
        assert_eq!(UserState::from_code(7), None);
    }
}

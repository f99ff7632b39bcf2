//! Request and response bodies, field for field as the mitosis 0.6 API has them.
//! Options may be omitted or null; everything else is required unless marked `default`.

use super::enums::*;
use super::time::{self, Timestamp};
use super::Md5Password;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use uuid::Uuid;

// ---------------------------------------------------------------- auth, users, admin

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserLoginReq {
    pub username: String,
    pub md5_password: Md5Password,
    #[serde(default)]
    pub retain: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserLoginResp {
    pub token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserChangePasswordReq {
    pub old_md5_password: Md5Password,
    pub new_md5_password: Md5Password,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserChangePasswordResp {
    pub token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdminChangePasswordReq {
    pub new_md5_password: Md5Password,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateUserReq {
    pub username: String,
    pub md5_password: Md5Password,
    pub admin: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChangeUserStateReq {
    pub state: UserState,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserStateResp {
    pub state: UserState,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChangeUserGroupQuota {
    pub group_quota: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserGroupQuotaResp {
    pub group_quota: i32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChangeGroupStorageQuotaReq {
    pub storage_quota: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupStorageQuotaResp {
    pub storage_quota: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShutdownReq {
    pub secret: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RedisConnectionInfo {
    pub url: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupsQueryResp {
    pub groups: BTreeMap<String, UserGroupRole>,
}

// ---------------------------------------------------------------- groups

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateGroupReq {
    pub group_name: String,
}

/// `GET /groups/{g}/stats` (a mito extension): one point per minute, oldest first, the last
/// one the current minute.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupStats {
    pub group_name: String,
    pub window_minutes: u32,
    pub points: Vec<StatsPoint>,
    /// Tasks per state: those not yet archived (Pending, Ready, Running, and Finished or
    /// Cancelled awaiting their commit) plus those archived within the window.
    #[serde(default)]
    pub states: BTreeMap<TaskState, i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatsPoint {
    /// The minute's start, RFC 3339 in UTC (`2026-01-02T03:04:00Z`).
    pub minute: String,
    /// Tasks of the group archived in that minute (finished, failed or cancelled).
    pub finished: i64,
    /// The group's Ready queue depth sampled in that minute; None when nobody sampled.
    pub ready: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupQueryInfo {
    pub group_name: String,
    pub creator_username: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub state: GroupState,
    pub task_count: i64,
    pub storage_quota: i64,
    pub storage_used: i64,
    pub worker_count: i64,
    pub users_in_group: Option<BTreeMap<String, UserGroupRole>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpdateUserGroupRoleReq {
    pub relations: BTreeMap<String, UserGroupRole>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoveUserGroupRoleReq {
    pub users: BTreeSet<String>,
}

// ---------------------------------------------------------------- tasks

/// What a task runs and with which inputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub args: Vec<String>,
    #[serde(default)]
    pub envs: BTreeMap<String, String>,
    #[serde(default)]
    pub resources: Vec<RemoteResourceDownload>,
    #[serde(default)]
    pub terminal_output: bool,
    #[serde(default)]
    pub watch: Option<(Uuid, TaskExecState)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemoteResourceDownload {
    pub remote_file: RemoteResource,
    pub local_path: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RemoteResource {
    Artifact { uuid: Uuid, content_type: ArtifactContentType },
    Attachment { key: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubmitTaskReq {
    pub group_name: String,
    pub tags: BTreeSet<String>,
    pub labels: BTreeSet<String>,
    #[serde(with = "time::duration")]
    pub timeout: Duration,
    pub priority: i32,
    pub task_spec: TaskSpec,
    /// mito's extension: run the task again when an attempt fails. Left out on the wire
    /// when absent, so a mitosis 0.6 coordinator's parser sees the request it knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<RetryPolicy>,
    /// mito's extension: start only after these tasks all ended Finished with exit 0.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<Uuid>,
    /// mito's extension: start only after these tasks all ended, whatever their outcome.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after_any: Vec<Uuid>,
}

/// When and how often a task runs again: up to `max` more attempts, for the outcomes in
/// `on`, each after `backoff` doubled per attempt (with jitter, capped).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    pub max: u32,
    #[serde(default = "RetryOn::every")]
    pub on: BTreeSet<RetryOn>,
    #[serde(default, with = "time::duration")]
    pub backoff: Duration,
}

/// An outcome that may cause a retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RetryOn {
    /// The command exited with a non-zero status.
    Failure,
    /// The command ran past its timeout.
    Timeout,
    /// Its worker died, was removed, or never confirmed the task.
    Lost,
}

impl RetryOn {
    pub fn every() -> BTreeSet<RetryOn> {
        [RetryOn::Failure, RetryOn::Timeout, RetryOn::Lost].into_iter().collect()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RetryOn::Failure => "failure",
            RetryOn::Timeout => "timeout",
            RetryOn::Lost => "lost",
        }
    }

    pub fn parse(s: &str) -> Option<RetryOn> {
        [RetryOn::Failure, RetryOn::Timeout, RetryOn::Lost].into_iter().find(|o| o.as_str() == s.trim())
    }
}

/// One ended attempt of a task that has a retry policy (mito's extension).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskAttempt {
    pub attempt: i32,
    /// `success`, `failure`, `timeout`, `lost`, `cancelled` or `other`.
    pub outcome: String,
    pub worker: Option<Uuid>,
    pub started_at: Option<Timestamp>,
    pub ended_at: Timestamp,
    pub result: Option<TaskResultSpec>,
    /// The artifacts this attempt uploaded (each attempt keeps its own); left out when
    /// there are none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<ArtifactQueryResp>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubmitTaskResp {
    pub task_id: i64,
    pub uuid: Uuid,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TasksSubmitReq {
    pub tasks: Vec<SubmitTaskReq>,
    /// mito's extension: with it, `tasks` holds one task, submitted once per index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub array: Option<ArraySpec>,
}

/// An array of tasks from one template: one task per index of `start..=end` by `step`,
/// each with `MITO_ARRAY_INDEX` and `MITO_ARRAY_ID` in its environment and the label
/// `array:<id>`; `{i}` in its arguments becomes the index when `subst` is set; at most
/// `max_running` of them run at once when given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArraySpec {
    pub start: u64,
    pub end: u64,
    #[serde(default = "one")]
    pub step: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_running: Option<u32>,
    #[serde(default)]
    pub subst: bool,
}

fn one() -> u64 {
    1
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TasksSubmitResp {
    pub results: Vec<Result<SubmitTaskResp, super::ErrorMsg>>,
    /// mito's extension: the array's id, when the request was an array.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub array_id: Option<Uuid>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChangeTaskReq {
    #[serde(default)]
    pub tags: Option<BTreeSet<String>>,
    /// Every field may be left out or null: the task keeps what it has. (The peer wants
    /// the `timeout` key; SDKs that leave it out would get 422 for a valid change.)
    #[serde(default, with = "time::option_duration")]
    pub timeout: Option<Duration>,
    #[serde(default)]
    pub priority: Option<i32>,
    #[serde(default)]
    pub task_spec: Option<TaskSpec>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpdateTaskLabelsReq {
    pub labels: BTreeSet<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskResultSpec {
    pub exit_status: i32,
    pub msg: Option<TaskResultMessage>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArtifactQueryResp {
    pub content_type: ArtifactContentType,
    pub size: i64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A task as queries return it; `timeout` is whole seconds here, not a humantime string.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskQueryInfo {
    pub uuid: Uuid,
    pub creator_username: String,
    pub group_name: String,
    pub task_id: i64,
    pub tags: Vec<String>,
    pub labels: Vec<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub state: TaskState,
    pub timeout: i64,
    pub priority: i32,
    pub spec: TaskSpec,
    pub result: Option<TaskResultSpec>,
    pub upstream_task_uuid: Option<Uuid>,
    pub downstream_task_uuid: Option<Uuid>,
    pub reporter_uuid: Option<Uuid>,
    /// mito's extension: why the task waits or ended as it did (a retry's backoff, the
    /// dependency that failed); left out when there is nothing to say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskQueryResp {
    pub info: TaskQueryInfo,
    pub artifacts: Vec<ArtifactQueryResp>,
    /// mito's extension: the ended attempts of a task with a retry policy, oldest first;
    /// left out when there are none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<TaskAttempt>,
    /// mito's extension: the task's retry policy while it is active (the archive keeps its
    /// attempts, not its policy); left out when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<RetryPolicy>,
    /// mito's extension: the dependencies a waiting task waits for, that must end Finished
    /// with exit 0 (`after`) or end at all (`after_any`). They are forgotten once resolved,
    /// so a task that started or ended lists none; each is left out when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<Uuid>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after_any: Vec<Uuid>,
}

/// The task filter the query, cancel and artifact batch bodies share, flattened into
/// each: its fields come first on the wire, in this order. Every field may be left out or
/// null (no condition); `group_name` defaults to the caller's own group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskFilter {
    #[serde(default)]
    pub creator_usernames: Option<BTreeSet<String>>,
    #[serde(default)]
    pub group_name: Option<String>,
    #[serde(default)]
    pub tags: Option<BTreeSet<String>>,
    #[serde(default)]
    pub labels: Option<BTreeSet<String>>,
    #[serde(default)]
    pub states: Option<BTreeSet<TaskState>>,
    #[serde(default)]
    pub exit_status: Option<String>,
    #[serde(default)]
    pub priority: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TasksQueryReq {
    #[serde(flatten)]
    pub filter: TaskFilter,
    #[serde(default)]
    pub reporter_uuid: Option<Uuid>,
    #[serde(default)]
    pub limit: Option<u64>,
    #[serde(default)]
    pub offset: Option<u64>,
    pub count: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TasksQueryResp {
    pub count: u64,
    pub tasks: Vec<TaskQueryInfo>,
    pub group_name: String,
}

/// mito's extension, `POST /tasks/summary`: the tasks a filter selects, counted by state
/// and by result (an array's progress: its label is the filter).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TasksSummaryReq {
    #[serde(flatten)]
    pub filter: TaskFilter,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TasksSummaryResp {
    pub group_name: String,
    /// How many tasks, active and archived, match.
    pub count: u64,
    /// Tasks per state; states with none are left out.
    pub states: BTreeMap<TaskState, u64>,
    /// Ended tasks per result, most frequent first.
    pub results: Vec<ResultCount>,
}

/// How many tasks ended with one result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResultCount {
    pub exit_status: i32,
    pub msg: Option<TaskResultMessage>,
    pub count: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TasksCancelByFilterReq {
    #[serde(flatten)]
    pub filter: TaskFilter,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TasksCancelByFilterResp {
    pub cancelled_count: u64,
    pub group_name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TasksCancelByUuidsReq {
    pub uuids: Vec<Uuid>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TasksCancelByUuidsResp {
    pub cancelled_count: u64,
    pub failed_uuids: Vec<Uuid>,
}

// ---------------------------------------------------------------- workers

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterWorkerReq {
    pub tags: BTreeSet<String>,
    pub labels: BTreeSet<String>,
    pub groups: BTreeSet<String>,
    #[serde(default, with = "time::option_duration")]
    pub lifetime: Option<Duration>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterWorkerResp {
    pub worker_id: Uuid,
    pub token: String,
    pub redis_url: Option<String>,
}

/// A task handed to a worker. `id` is the global row id used in reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerTaskResp {
    pub id: i64,
    pub uuid: Uuid,
    #[serde(with = "time::duration")]
    pub timeout: Duration,
    pub upstream_task_uuid: Option<Uuid>,
    pub spec: TaskSpec,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReportTaskReq {
    pub id: i64,
    pub op: ReportTaskOp,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ReportTaskOp {
    Finish,
    Cancel,
    Submit(Box<SubmitTaskReq>),
    Commit(TaskResultSpec),
    Upload { content_type: ArtifactContentType, content_length: u64 },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReportTaskResp {
    pub url: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerQueryInfo {
    pub worker_id: Uuid,
    pub creator_username: String,
    pub tags: Vec<String>,
    pub labels: Vec<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub state: WorkerState,
    pub last_heartbeat: Timestamp,
    pub assigned_task_id: Option<Uuid>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerQueryResp {
    pub info: WorkerQueryInfo,
    pub groups: BTreeMap<String, GroupWorkerRole>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WorkersQueryReq {
    #[serde(default)]
    pub group_name: Option<String>,
    #[serde(default)]
    pub role: Option<BTreeSet<GroupWorkerRole>>,
    #[serde(default)]
    pub tags: Option<BTreeSet<String>>,
    #[serde(default)]
    pub labels: Option<BTreeSet<String>>,
    #[serde(default)]
    pub creator_username: Option<String>,
    pub count: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkersQueryResp {
    pub count: u64,
    pub workers: Vec<WorkerQueryInfo>,
    pub group_name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkersShutdownByFilterReq {
    #[serde(default)]
    pub group_name: Option<String>,
    #[serde(default)]
    pub role: Option<BTreeSet<GroupWorkerRole>>,
    #[serde(default)]
    pub tags: Option<BTreeSet<String>>,
    #[serde(default)]
    pub labels: Option<BTreeSet<String>>,
    #[serde(default)]
    pub creator_username: Option<String>,
    pub op: WorkerShutdownOp,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkersShutdownByFilterResp {
    pub shutdown_count: u64,
    pub group_name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkersShutdownByUuidsReq {
    pub uuids: Vec<Uuid>,
    pub op: WorkerShutdownOp,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkersShutdownByUuidsResp {
    pub shutdown_count: u64,
    pub failed_uuids: Vec<Uuid>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplaceWorkerTagsReq {
    pub tags: BTreeSet<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplaceWorkerLabelsReq {
    pub labels: BTreeSet<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpdateGroupWorkerRoleReq {
    pub relations: BTreeMap<String, GroupWorkerRole>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoveGroupWorkerRoleReq {
    pub groups: BTreeSet<String>,
}

// ---------------------------------------------------------------- attachments and artifacts

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadAttachmentReq {
    pub key: String,
    pub content_length: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadAttachmentResp {
    pub exist: bool,
    pub url: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttachmentMetadata {
    pub content_type: AttachmentContentType,
    pub size: i64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AttachmentsQueryReq {
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub limit: Option<u64>,
    #[serde(default)]
    pub offset: Option<u64>,
    pub count: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttachmentQueryInfo {
    pub key: String,
    pub content_type: AttachmentContentType,
    pub size: i64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttachmentsQueryResp {
    pub count: u64,
    pub attachments: Vec<AttachmentQueryInfo>,
    pub group_name: String,
}

/// Also the body of `POST /groups/{g}/delete/attachments` (AttachmentsDeleteByFilterReq).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AttachmentsDownloadByFilterReq {
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub limit: Option<u64>,
    #[serde(default)]
    pub offset: Option<u64>,
}

pub type AttachmentsDeleteByFilterReq = AttachmentsDownloadByFilterReq;

/// Also the body of `POST /groups/{g}/delete/attachments/list` (AttachmentsDeleteByKeysReq).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttachmentsDownloadByKeysReq {
    pub keys: Vec<String>,
}

pub type AttachmentsDeleteByKeysReq = AttachmentsDownloadByKeysReq;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttachmentDownloadItem {
    pub key: String,
    pub url: String,
    pub size: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttachmentsDownloadListResp {
    pub downloads: Vec<AttachmentDownloadItem>,
    pub group_name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttachmentsDeleteByFilterResp {
    pub deleted_count: u64,
    pub group_name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttachmentsDeleteByKeysResp {
    pub deleted_count: u64,
    pub failed_keys: Vec<String>,
    pub group_name: String,
}

/// A signed download URL and the object's recorded size.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoteResourceDownloadResp {
    pub url: String,
    pub size: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadArtifactReq {
    pub content_type: ArtifactContentType,
    pub content_length: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadArtifactResp {
    pub exist: bool,
    pub url: String,
}

/// A task filter plus the artifact type; also ArtifactsDeleteByFilterReq.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArtifactsDownloadByFilterReq {
    #[serde(flatten)]
    pub filter: TaskFilter,
    #[serde(default)]
    pub reporter_uuid: Option<Uuid>,
    pub content_type: ArtifactContentType,
}

pub type ArtifactsDeleteByFilterReq = ArtifactsDownloadByFilterReq;

/// Also ArtifactsDeleteByUuidsReq.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArtifactsDownloadByUuidsReq {
    pub uuids: Vec<Uuid>,
    pub content_type: ArtifactContentType,
}

pub type ArtifactsDeleteByUuidsReq = ArtifactsDownloadByUuidsReq;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArtifactDownloadItem {
    pub uuid: Uuid,
    pub url: String,
    pub size: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArtifactsDownloadListResp {
    pub downloads: Vec<ArtifactDownloadItem>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArtifactsDeleteByFilterResp {
    pub deleted_count: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArtifactsDeleteByUuidsResp {
    pub deleted_count: u64,
    pub failed_uuids: Vec<Uuid>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_ops_use_external_tagging() {
        let r: ReportTaskReq =
            serde_json::from_str(r#"{"id":7,"op":{"Commit":{"exit_status":256,"msg":null}}}"#).unwrap();
        assert!(matches!(r.op, ReportTaskOp::Commit(TaskResultSpec { exit_status: 256, msg: None })));
        let r: ReportTaskReq = serde_json::from_str(r#"{"id":7,"op":"Finish"}"#).unwrap();
        assert!(matches!(r.op, ReportTaskOp::Finish));
        let s = serde_json::to_string(&ReportTaskOp::Upload {
            content_type: ArtifactContentType::StdLog,
            content_length: 123,
        })
        .unwrap();
        assert_eq!(s, r#"{"Upload":{"content_type":"std-log","content_length":123}}"#);
    }

    #[test]
    fn submit_example_from_the_reference_parses() {
        let j = r#"{"group_name":"g","tags":["t1"],"labels":[],"timeout":"1h 30m","priority":3,
 "task_spec":{"args":["echo","hi"],"envs":{"A":"1"},
   "resources":[{"remote_file":{"Artifact":{"uuid":"123e4567-e89b-12d3-a456-426614174000","content_type":"exec-log"}},"local_path":"a/b"},
                {"remote_file":{"Attachment":{"key":"k/x.txt"}},"local_path":"c"}],
   "terminal_output":true,"watch":["123e4567-e89b-12d3-a456-426614174000","ExecFinished"]}}"#;
        let r: SubmitTaskReq = serde_json::from_str(j).unwrap();
        assert_eq!(r.timeout, Duration::from_secs(5400));
        assert_eq!(r.task_spec.resources.len(), 2);
        assert_eq!(r.task_spec.watch.unwrap().1, TaskExecState::ExecFinished);
    }

    #[test]
    fn change_task_fields_are_all_optional() {
        let c: ChangeTaskReq = serde_json::from_str(r#"{"priority":1}"#).unwrap();
        assert_eq!((c.timeout, c.priority), (None, Some(1)));
        let c: ChangeTaskReq = serde_json::from_str(r#"{"priority":1,"timeout":null}"#).unwrap();
        assert_eq!(c.timeout, None);
        let c: ChangeTaskReq =
            serde_json::from_str(r#"{"tags":null,"timeout":"2m","priority":null,"task_spec":null}"#).unwrap();
        assert_eq!((c.timeout, c.tags, c.priority), (Some(Duration::from_secs(120)), None, None));
    }

    #[test]
    fn batch_results_are_ok_or_err_objects() {
        let r = TasksSubmitResp {
            array_id: None,
            results: vec![
                Ok(SubmitTaskResp { task_id: 1, uuid: Uuid::nil() }),
                Err(crate::api::ErrorMsg { msg: "x".into() }),
            ],
        };
        let s = serde_json::to_string(&r).unwrap();
        assert!(s.contains(r#"{"Ok":{"task_id":1"#) && s.contains(r#"{"Err":{"msg":"x"}}"#), "{s}");
    }
}

/// The task-filter request bodies, byte for byte: the strings below were captured from
/// the serialization before the filter fields were gathered into one struct, so any
/// change to field order, names or null handling shows here.
#[cfg(test)]
mod filter_wire_tests {
    use super::*;

    const REPORTER: &str = "123e4567-e89b-12d3-a456-426614174000";

    fn set(v: &[&str]) -> Option<BTreeSet<String>> {
        Some(v.iter().map(|s| s.to_string()).collect())
    }

    fn json<T: Serialize>(v: &T) -> String {
        serde_json::to_string(v).unwrap()
    }

    /// Parses `body` as `T` and serializes it again.
    fn round_trip<T: Serialize + serde::de::DeserializeOwned>(body: &str) -> String {
        json(&serde_json::from_str::<T>(body).unwrap_or_else(|e| panic!("{body}: {e}")))
    }

    fn full_filter() -> TaskFilter {
        TaskFilter {
            creator_usernames: set(&["bob", "alice"]),
            group_name: Some("research-team".into()),
            tags: set(&["gpu", "training"]),
            labels: set(&["experiment-1"]),
            states: Some([TaskState::Running, TaskState::Ready].into_iter().collect()),
            exit_status: Some("!=0".into()),
            priority: Some(">5".into()),
        }
    }

    fn full_query() -> TasksQueryReq {
        TasksQueryReq {
            filter: full_filter(),
            reporter_uuid: Some(REPORTER.parse().unwrap()),
            limit: Some(50),
            offset: Some(10),
            count: true,
        }
    }

    const FULL_QUERY: &str = r#"{"creator_usernames":["alice","bob"],"group_name":"research-team","tags":["gpu","training"],"labels":["experiment-1"],"states":["Ready","Running"],"exit_status":"!=0","priority":">5","reporter_uuid":"123e4567-e89b-12d3-a456-426614174000","limit":50,"offset":10,"count":true}"#;
    const EMPTY_QUERY: &str = r#"{"creator_usernames":null,"group_name":null,"tags":null,"labels":null,"states":null,"exit_status":null,"priority":null,"reporter_uuid":null,"limit":null,"offset":null,"count":false}"#;
    const FULL_CANCEL: &str = r#"{"creator_usernames":["alice","bob"],"group_name":"research-team","tags":["gpu","training"],"labels":["experiment-1"],"states":["Ready","Running"],"exit_status":"!=0","priority":">5"}"#;
    const EMPTY_CANCEL: &str = r#"{"creator_usernames":null,"group_name":null,"tags":null,"labels":null,"states":null,"exit_status":null,"priority":null}"#;
    const FULL_ARTIFACTS: &str = r#"{"creator_usernames":["alice","bob"],"group_name":"research-team","tags":["gpu","training"],"labels":["experiment-1"],"states":["Ready","Running"],"exit_status":"!=0","priority":">5","reporter_uuid":"123e4567-e89b-12d3-a456-426614174000","content_type":"exec-log"}"#;
    const EMPTY_ARTIFACTS: &str = r#"{"creator_usernames":null,"group_name":null,"tags":null,"labels":null,"states":null,"exit_status":null,"priority":null,"reporter_uuid":null,"content_type":"result"}"#;

    #[test]
    fn query_bodies_serialize_as_before() {
        assert_eq!(json(&full_query()), FULL_QUERY);
        assert_eq!(json(&TasksQueryReq::default()), EMPTY_QUERY);
    }

    #[test]
    fn cancel_bodies_serialize_as_before() {
        let full = TasksCancelByFilterReq { filter: full_filter() };
        assert_eq!(json(&full), FULL_CANCEL);
        assert_eq!(json(&TasksCancelByFilterReq::default()), EMPTY_CANCEL);
    }

    #[test]
    fn artifact_filter_bodies_serialize_as_before() {
        let full = ArtifactsDownloadByFilterReq {
            filter: full_filter(),
            reporter_uuid: Some(REPORTER.parse().unwrap()),
            content_type: ArtifactContentType::ExecLog,
        };
        let empty = ArtifactsDeleteByFilterReq {
            filter: TaskFilter::default(),
            reporter_uuid: None,
            content_type: ArtifactContentType::Result,
        };
        assert_eq!(json(&full), FULL_ARTIFACTS);
        assert_eq!(json(&empty), EMPTY_ARTIFACTS);
    }

    /// Bodies as mitosis clients send them: every filter field, some left out, some
    /// null, states and roles in their accepted spellings.
    #[test]
    fn mitosis_style_filter_bodies_parse() {
        assert_eq!(
            round_trip::<TasksQueryReq>(
                r#"{"reporter_uuid":"123e4567-e89b-12d3-a456-426614174000","creator_usernames":["bob","alice"],
                   "group_name":"research-team","tags":["training","gpu"],"labels":["experiment-1"],
                   "states":["Running","Ready"],"exit_status":"!=0","priority":">5","limit":50,"offset":10,"count":true}"#
            ),
            FULL_QUERY
        );
        assert_eq!(round_trip::<TasksQueryReq>(r#"{"count":false}"#), EMPTY_QUERY);
        assert_eq!(
            round_trip::<TasksQueryReq>(r#"{"group_name":null,"states":null,"limit":null,"count":false}"#),
            EMPTY_QUERY
        );
        assert_eq!(
            round_trip::<TasksCancelByFilterReq>(
                r#"{"creator_usernames":["alice","bob"],"group_name":"research-team","tags":["gpu","training"],
                   "labels":["experiment-1"],"states":["Ready","Running"],"exit_status":"!=0","priority":">5"}"#
            ),
            FULL_CANCEL
        );
        assert_eq!(round_trip::<TasksCancelByFilterReq>("{}"), EMPTY_CANCEL);
        assert_eq!(round_trip::<TasksCancelByFilterReq>(r#"{"tags":null,"priority":null}"#), EMPTY_CANCEL);
        assert_eq!(
            round_trip::<ArtifactsDownloadByFilterReq>(
                r#"{"reporter_uuid":"123e4567-e89b-12d3-a456-426614174000","creator_usernames":["alice","bob"],
                   "group_name":"research-team","tags":["gpu","training"],"labels":["experiment-1"],
                   "states":["Ready","Running"],"exit_status":"!=0","priority":">5","content_type":"exec-log"}"#
            ),
            FULL_ARTIFACTS
        );
        assert_eq!(round_trip::<ArtifactsDeleteByFilterReq>(r#"{"content_type":"result"}"#), EMPTY_ARTIFACTS);
        assert_eq!(
            round_trip::<ArtifactsDeleteByFilterReq>(r#"{"states":null,"content_type":"Result"}"#),
            EMPTY_ARTIFACTS
        );
    }

    /// What was refused stays refused, as a shape error: a missing `count` or
    /// `content_type`, a state or type nobody spells that way, a number for a list.
    #[test]
    fn malformed_filter_bodies_are_refused() {
        use serde_json::error::Category;
        fn refusal<T: serde::de::DeserializeOwned>(body: &str) -> Category {
            serde_json::from_str::<T>(body).map(|_| ()).unwrap_err().classify()
        }
        assert_eq!(refusal::<TasksQueryReq>("{}"), Category::Data);
        assert_eq!(refusal::<TasksQueryReq>(r#"{"states":["Done"],"count":false}"#), Category::Data);
        assert_eq!(refusal::<TasksQueryReq>(r#"{"limit":"x","count":false}"#), Category::Data);
        assert_eq!(refusal::<TasksCancelByFilterReq>(r#"{"tags":7}"#), Category::Data);
        assert_eq!(refusal::<ArtifactsDownloadByFilterReq>("{}"), Category::Data);
        assert_eq!(refusal::<ArtifactsDownloadByFilterReq>(r#"{"content_type":"core-dump"}"#), Category::Data);
    }
}

/// New bytes of one stream in a `GET /tasks/{uuid}/log` answer (mito's extension).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TaskLogPiece {
    /// Where `data` starts: past the offset asked for when older bytes were dropped.
    pub offset: u64,
    /// The offset to ask from next time.
    pub next_offset: u64,
    /// The bytes as text (invalid UTF-8 replaced); a character split across reads is
    /// held back until it is whole.
    pub data: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskLogResp {
    /// Whether the worker ships output at all (a mitosis worker, or a task without
    /// `terminal_output`, never does: read the std-log artifact once the task is done).
    pub live: bool,
    /// The task is no longer running: nothing more will come.
    pub ended: bool,
    pub state: TaskState,
    pub stdout: TaskLogPiece,
    pub stderr: TaskLogPiece,
}

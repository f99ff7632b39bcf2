//! Integration tests: the real `mito` binary against a real PostgreSQL.
//! One test binary, so the whole run shares one private PostgreSQL server.

mod harness;

mod admin;
mod auth;
mod bad_input;
mod check_config;
mod cli;
mod client;
mod client_files;
mod client_tasks;
mod dashboard;
mod dashboard_workflows;
mod deep_queues;
mod end_to_end;
mod faults;
mod groups;
mod http_limits;
mod lifecycle;
mod limits;
mod login_limits;
mod manager;
mod metrics;
mod permissions;
mod redis_acl;
mod reliability;
mod scheduling;
mod secrets_and_limits;
mod startup;
mod storage;
mod tasks;
mod tls;
mod webdriver;
mod worker;
mod worker_isolation;
mod worker_protocol;
mod worker_scope;
mod workflows_arrays;
mod workflows_retries;

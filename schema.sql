-- mito's whole database schema, as numbered migrations.
--
-- The coordinator applies it at startup in one transaction under an advisory lock: every
-- migration not yet listed in schema_version runs once, in order. Never edit a migration
-- that has been released; add a new one at the end.
--
-- Enum-like columns hold the integers of src/api/enums.rs (e.g. task state Ready = 1).

-- migration 1: users, groups, workers, tasks, attachments and artifacts
CREATE TABLE users (
    id                 bigserial PRIMARY KEY,
    username           text        NOT NULL UNIQUE,
    password_hash      text        NOT NULL,            -- argon2id of the md5 digest
    auth_signature     bigint,                          -- must equal a token's `sign`
    current_sign_in_at timestamptz,
    last_sign_in_at    timestamptz,
    current_sign_in_ip text,
    last_sign_in_ip    text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    admin              boolean     NOT NULL DEFAULT false,
    state              integer     NOT NULL DEFAULT 0, -- UserState::Active
    group_quota        integer     NOT NULL DEFAULT 8,
    group_count        integer     NOT NULL DEFAULT 1
);

CREATE TABLE groups (
    id            bigserial PRIMARY KEY,
    group_name    text        NOT NULL UNIQUE,
    creator_id    bigint      NOT NULL REFERENCES users (id),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    state         integer     NOT NULL DEFAULT 0, -- GroupState::Active
    task_count    bigint      NOT NULL DEFAULT 0,       -- per-group task_id sequence
    storage_quota bigint      NOT NULL DEFAULT 16000000000,
    storage_used  bigint      NOT NULL DEFAULT 0
);

CREATE TABLE user_group (
    user_id  bigint  NOT NULL REFERENCES users (id),
    group_id bigint  NOT NULL REFERENCES groups (id),
    role     integer NOT NULL,
    PRIMARY KEY (user_id, group_id)
);
CREATE INDEX user_group_group_id ON user_group (group_id);

CREATE TABLE workers (
    id               bigserial PRIMARY KEY,
    worker_id        uuid        NOT NULL UNIQUE,
    creator_id       bigint      NOT NULL REFERENCES users (id),
    tags             text[]      NOT NULL DEFAULT '{}',
    labels           text[]      NOT NULL DEFAULT '{}',
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    state            integer     NOT NULL DEFAULT 0, -- WorkerState::Normal
    last_heartbeat   timestamptz NOT NULL DEFAULT now(),
    assigned_task_id bigint
);
CREATE INDEX workers_last_heartbeat ON workers (last_heartbeat);

CREATE TABLE group_worker (
    group_id  bigint  NOT NULL REFERENCES groups (id),
    worker_id bigint  NOT NULL REFERENCES workers (id) ON DELETE CASCADE,
    role      integer NOT NULL,
    PRIMARY KEY (group_id, worker_id)
);
CREATE INDEX group_worker_worker_id ON group_worker (worker_id);

CREATE TABLE active_tasks (
    id                   bigserial PRIMARY KEY,
    creator_id           bigint      NOT NULL REFERENCES users (id),
    group_id             bigint      NOT NULL REFERENCES groups (id),
    task_id              bigint      NOT NULL,
    uuid                 uuid        NOT NULL UNIQUE,
    tags                 text[]      NOT NULL DEFAULT '{}',
    labels               text[]      NOT NULL DEFAULT '{}',
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    state                integer     NOT NULL,
    assigned_worker      bigint,
    timeout              bigint      NOT NULL,           -- seconds
    priority             integer     NOT NULL,
    spec                 jsonb       NOT NULL,
    result               jsonb,
    upstream_task_uuid   uuid,
    downstream_task_uuid uuid,
    cancel_requested     boolean     NOT NULL DEFAULT false,
    UNIQUE (group_id, task_id)
);
-- The claim walks Ready rows in claim order and stops at the first eligible one.
CREATE INDEX active_tasks_ready ON active_tasks (priority DESC, id) WHERE state = 1; -- TaskState::Ready
CREATE INDEX active_tasks_assigned_worker ON active_tasks (assigned_worker) WHERE assigned_worker IS NOT NULL;

CREATE TABLE archived_tasks (
    id                   bigint      PRIMARY KEY,        -- the active row's id, kept
    creator_id           bigint      NOT NULL REFERENCES users (id),
    group_id             bigint      NOT NULL REFERENCES groups (id),
    task_id              bigint      NOT NULL,
    uuid                 uuid        NOT NULL UNIQUE,
    tags                 text[]      NOT NULL DEFAULT '{}',
    labels               text[]      NOT NULL DEFAULT '{}',
    created_at           timestamptz NOT NULL,
    updated_at           timestamptz NOT NULL,
    state                integer     NOT NULL,
    assigned_worker      bigint,
    timeout              bigint      NOT NULL,
    priority             integer     NOT NULL,
    spec                 jsonb       NOT NULL,
    result               jsonb,
    upstream_task_uuid   uuid,
    downstream_task_uuid uuid,
    reporter_uuid        uuid,
    UNIQUE (group_id, task_id)
);
CREATE INDEX archived_tasks_group_id ON archived_tasks (group_id, id);

CREATE TABLE attachments (
    id           bigserial PRIMARY KEY,
    group_id     bigint      NOT NULL REFERENCES groups (id),
    key          text        NOT NULL,
    content_type integer     NOT NULL DEFAULT 0, -- AttachmentContentType::NoSet
    size         bigint      NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (group_id, key)
);

CREATE TABLE artifacts (
    id           bigserial PRIMARY KEY,
    task_id      uuid        NOT NULL,                   -- the task's uuid
    content_type integer     NOT NULL,
    size         bigint      NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (task_id, content_type)
);

-- migration 2: a cheaper queue
-- Measured with the end-to-end benchmark (fetch, Finish, Commit of no-op tasks), these cut
-- PostgreSQL's work per task by about a third.
--
-- Users and groups are never deleted (a user is only marked Deleted), and tasks are written
-- only by statements that just found their user and group, so the task tables' foreign
-- keys bought nothing. They cost a lot: every insert took a KEY SHARE lock on its group's
-- and creator's row, so concurrent commits of one group's tasks queued on multixacts of
-- that one row, and a batch submit ran two lookups per task.
ALTER TABLE active_tasks DROP CONSTRAINT IF EXISTS active_tasks_creator_id_fkey,
                         DROP CONSTRAINT IF EXISTS active_tasks_group_id_fkey;
ALTER TABLE archived_tasks DROP CONSTRAINT IF EXISTS archived_tasks_creator_id_fkey,
                           DROP CONSTRAINT IF EXISTS archived_tasks_group_id_fkey;
-- Task ids come from the group's counter, unique by construction; the active table's
-- unique index on them only added an index entry to every claim. (archived_tasks keeps its
-- own: queries read it.)
ALTER TABLE active_tasks DROP CONSTRAINT IF EXISTS active_tasks_group_id_task_id_key;
-- The claim index names the unassigned rows (Ready, and the few Pending ones, which the
-- claim skips) instead of `state = 1`: with no index on `state`, a Finish report changes
-- no indexed column and PostgreSQL updates the row in place (a HOT update, no new index
-- entries), which the spare room per page (fillfactor) makes possible.
DROP INDEX IF EXISTS active_tasks_ready;
CREATE INDEX active_tasks_unassigned ON active_tasks (priority DESC, id) WHERE assigned_worker IS NULL;
ALTER TABLE active_tasks SET (fillfactor = 70);

-- migration 3: who vouched for each worker-group link
-- Attaching a worker to a group takes a member with the Write or Admin role in it; the
-- link remembers that member, so that when they leave the group (or lose the role, or
-- their account is deleted) the workers they brought in leave with them.
ALTER TABLE group_worker ADD COLUMN vouched_by bigint REFERENCES users (id);
UPDATE group_worker gw SET vouched_by = w.creator_id FROM workers w WHERE w.id = gw.worker_id;
-- Links whose worker's owner has no Write role in the group were never vouched for by a
-- member (attaching once checked nothing): they go, and a member attaches them again.
-- (role 1: UserGroupRole::Write; state 2: UserState::Deleted.)
DELETE FROM group_worker gw
WHERE NOT EXISTS (SELECT 1 FROM user_group ug JOIN users u ON u.id = ug.user_id
                  WHERE ug.user_id = gw.vouched_by AND ug.group_id = gw.group_id AND ug.role >= 1 AND u.state <> 2);
ALTER TABLE group_worker ALTER COLUMN vouched_by SET NOT NULL;
CREATE INDEX group_worker_vouched_by ON group_worker (vouched_by);
-- A worker's Submit counts the Pending tasks its upstream task already made; few tasks
-- have an upstream, so the index is small and never changes after the insert.
CREATE INDEX active_tasks_upstream ON active_tasks (upstream_task_uuid) WHERE upstream_task_uuid IS NOT NULL;

-- migration 4: claim leases
-- A task handed to a worker that confirms its claims (mito workers say so when they
-- register) carries a deadline until the worker confirms it (heartbeat or report); the
-- reaper puts it back to Ready past that deadline, so a fetch answered to a worker that
-- died on the way costs seconds, not heartbeat_timeout. mitosis workers never confirm:
-- their claims get no deadline.
ALTER TABLE workers ADD COLUMN confirms_claims boolean NOT NULL DEFAULT false;
ALTER TABLE active_tasks ADD COLUMN claim_deadline timestamptz;
CREATE INDEX active_tasks_claim_deadline ON active_tasks (claim_deadline) WHERE claim_deadline IS NOT NULL;

-- migration 5: history for the per-group stats (GET /groups/{g}/stats)
-- Once a minute the reaper records every group's Ready count (groups with none get no row)
-- and that it sampled at all (queue_sample_minutes): a sampled minute without a row for a
-- group reads 0, a minute nobody sampled reads "no sample". Rows older than a day go.
CREATE TABLE queue_sample_minutes (
    minute timestamptz PRIMARY KEY
);
CREATE TABLE queue_samples (
    group_id bigint      NOT NULL,
    minute   timestamptz NOT NULL,
    ready    bigint      NOT NULL,
    PRIMARY KEY (group_id, minute)
);
CREATE INDEX queue_samples_minute ON queue_samples (minute);
-- Tasks of a group archived per minute: a range scan of this index, not a pass over the
-- group's whole archive.
CREATE INDEX archived_tasks_group_updated ON archived_tasks (group_id, updated_at);

-- migration 6: retries and dependencies
-- A task may carry a retry policy (`retry_policy`, the submitted JSON). Each ended attempt
-- of such a task is kept in task_attempts; between attempts the task waits in Pending
-- until `not_before`, when the reaper makes it Ready again (the claim itself is unchanged:
-- it takes Ready rows only). `started_at` is set by the claim, for the attempt's record.
-- `note` says why a task waits or how it ended (kept into the archive).
ALTER TABLE active_tasks ADD COLUMN retry_policy jsonb,
                         ADD COLUMN not_before timestamptz,
                         ADD COLUMN started_at timestamptz,
                         ADD COLUMN note text;
ALTER TABLE archived_tasks ADD COLUMN note text;
CREATE INDEX active_tasks_not_before ON active_tasks (not_before) WHERE not_before IS NOT NULL;
CREATE TABLE task_attempts (
    task_uuid  uuid        NOT NULL,
    attempt    integer     NOT NULL,
    outcome    text        NOT NULL,              -- success, failure, timeout, lost, cancelled, other
    worker     uuid,
    started_at timestamptz,
    ended_at   timestamptz NOT NULL DEFAULT now(),
    result     jsonb,
    PRIMARY KEY (task_uuid, attempt)
);
-- A task submitted with dependencies waits in Pending with one row per dependency here;
-- the reaper makes it Ready (or cancels it) once they have ended, and removes its rows.
-- Only unresolved dependencies have rows, so the table stays small.
CREATE TABLE task_dependencies (
    task_uuid       uuid    NOT NULL,
    dependency_uuid uuid    NOT NULL,
    any_outcome     boolean NOT NULL,                 -- --after-any: any ending will do
    PRIMARY KEY (task_uuid, dependency_uuid)
);
CREATE INDEX task_dependencies_dependency ON task_dependencies (dependency_uuid);
-- migration 7: task arrays
-- An array submission (POST /tasks/submit with `array`) inserts its tasks in a transaction
-- that sets `mito.array_id`, so the one insert statement fills the column for arrays and
-- leaves it NULL otherwise. Its tasks also carry the label `array:<id>`, which queries,
-- cancellations and the archive use; the column serves the claim.
ALTER TABLE active_tasks ADD COLUMN array_id uuid
    DEFAULT NULLIF(current_setting('mito.array_id', true), '')::uuid;
-- An array with a cap (`%K`) has a row here; `running` counts its Running tasks, kept by
-- the triggers below on every path a task enters or leaves Running (claim, Finish,
-- Cancel, requeue, archive), so no route has to remember it.
CREATE TABLE task_arrays (
    id          uuid    PRIMARY KEY,
    group_id    bigint  NOT NULL,
    max_running integer NOT NULL,
    running     integer NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now()
);
-- A claim takes a slot or does not happen: the UPDATE rechecks `running < max_running` on
-- the newest row version when concurrent claims race, so the cap holds exactly even
-- though the claim's own filter reads a snapshot. (2: TaskState::Running.)
CREATE FUNCTION task_array_take() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE task_arrays SET running = running + 1 WHERE id = NEW.array_id AND running < max_running;
    IF FOUND OR NOT EXISTS (SELECT 1 FROM task_arrays WHERE id = NEW.array_id) THEN
        RETURN NEW;
    END IF;
    RETURN NULL;
END $$;
-- A freed slot may let a parked fetch run the array's next task: the NOTIFY (on the
-- scheduler's channel, sent at commit, from no coordinator so that every one hears it,
-- the writer included) wakes the fetches of the group's workers, whichever path freed it.
CREATE FUNCTION task_array_release() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE task_arrays SET running = greatest(running - 1, 0) WHERE id = OLD.array_id;
    IF FOUND THEN
        PERFORM pg_notify('mito_tasks', 'array|g:' || OLD.group_id);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER active_tasks_array_take BEFORE UPDATE OF state ON active_tasks FOR EACH ROW
    WHEN (NEW.array_id IS NOT NULL AND NEW.state = 2 AND OLD.state <> 2) EXECUTE FUNCTION task_array_take();
CREATE TRIGGER active_tasks_array_leave AFTER UPDATE OF state ON active_tasks FOR EACH ROW
    WHEN (OLD.array_id IS NOT NULL AND OLD.state = 2 AND NEW.state <> 2) EXECUTE FUNCTION task_array_release();
CREATE TRIGGER active_tasks_array_gone AFTER DELETE ON active_tasks FOR EACH ROW
    WHEN (OLD.array_id IS NOT NULL AND OLD.state = 2) EXECUTE FUNCTION task_array_release();
CREATE INDEX active_tasks_array ON active_tasks (array_id) WHERE array_id IS NOT NULL;
-- A running task's newest output, shipped by mito workers as it is written (stream 0 is
-- stdout, 1 stderr): `data` holds the bytes from `start_offset` on, at most the last MiB
-- (limits.rs), until the task's commit (its std-log artifact) removes the row.
CREATE TABLE task_logs (
    task_uuid    uuid        NOT NULL,
    stream       smallint    NOT NULL,
    start_offset bigint      NOT NULL DEFAULT 0,
    data         bytea       NOT NULL DEFAULT '',
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task_uuid, stream)
);
-- migration 8: an artifact per attempt
-- Each attempt of a task with a retry policy keeps its own artifacts: a row per (task,
-- type, attempt), its object under a key of its own (`{uuid}/attempts/{n}/{type}.tar.gz`),
-- its size charged to the group like any other. `attempt` 0 is a task without a policy,
-- whose object stays at `{uuid}/{type}.tar.gz`. The mitosis artifact routes answer with
-- the newest attempt's row of a type; the unique index serves that lookup backwards.
ALTER TABLE artifacts ADD COLUMN attempt integer NOT NULL DEFAULT 0;
ALTER TABLE artifacts DROP CONSTRAINT artifacts_task_id_content_type_key;
ALTER TABLE artifacts ADD CONSTRAINT artifacts_task_id_content_type_attempt_key
    UNIQUE (task_id, content_type, attempt);
-- migration 9: a queue per group
-- The claim used to walk one index of every unassigned row in claim order and keep the
-- first row of the worker's groups: a worker of a low-priority group walked past every
-- higher-priority task of the other groups (3 s a claim behind a million), and past every
-- Pending task (waiting for a retry or for dependencies) above its first Ready one. This
-- index holds the Ready rows only, by group, in claim order: the claim reads the head of
-- each of the worker's groups (a few entries each) and takes the best of those heads, so
-- its cost no longer grows with other groups' queues or with waiting tasks. Naming
-- `state` in its predicate makes a Finish report (Running to Finished) a non-HOT update,
-- a few more index entries per task: the price of skipping Pending rows in the index
-- rather than one heap visit each. It also counts a group's Ready tasks (queue samples)
-- from the index alone.
CREATE INDEX active_tasks_group_ready ON active_tasks (group_id, priority DESC, id)
    WHERE assigned_worker IS NULL AND state = 1; -- TaskState::Ready
DROP INDEX IF EXISTS active_tasks_unassigned;
-- A group's active tasks in id order, with their state: `tasks query` reads a page of a
-- group in that order and stops at its limit, and the dashboard's per-state counts of a
-- group read the index alone (the state is included), instead of a pass over the table.
CREATE INDEX active_tasks_group ON active_tasks (group_id, id) INCLUDE (state);
-- The archive stays one table, with B-tree indexes that begin with the group: every read
-- of it names a group (or a uuid, unique), so a read costs the depth of the tree and the
-- rows it returns, however large the archive grows; partitions (by time or group) would
-- add planning per partition to every query and could not keep `uuid` unique across them.
-- This one serves `tasks query` filtered by one state: the group's tasks of that state in
-- id order, so a page stops at its limit, and a state the archive does not hold (Ready,
-- say) costs one probe rather than a pass over the group.
CREATE INDEX archived_tasks_group_state ON archived_tasks (group_id, state, id);

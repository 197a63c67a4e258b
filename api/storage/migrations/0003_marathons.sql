-- Trading marathons: competitions, their participants (MetaTrader logins and the users who own
-- them), each account's latest snapshot, and leaderboards stored periodically.

CREATE TABLE marathons (
    id         text PRIMARY KEY,
    name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    starts_at  timestamptz NOT NULL,
    ends_at    timestamptz NOT NULL,
    public     boolean NOT NULL,
    organiser  text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK (ends_at > starts_at)
);

CREATE TABLE marathon_participants (
    marathon_id      text NOT NULL REFERENCES marathons (id) ON DELETE CASCADE,
    login            bigint NOT NULL CHECK (login > 0),
    participant      text NOT NULL,
        -- the user (token sub) who owns the account
    initial_balance  numeric,
        -- set by the organiser, or derived from the first snapshot after registration
    initial_explicit boolean NOT NULL DEFAULT false,
    registered_at    timestamptz NOT NULL,
    PRIMARY KEY (marathon_id, login)
);
CREATE INDEX marathon_participants_by_login ON marathon_participants (login);
CREATE INDEX marathon_participants_by_participant ON marathon_participants (participant);

CREATE TABLE account_snapshots (
    login       bigint PRIMARY KEY CHECK (login > 0),
    payload     jsonb NOT NULL,
    server_time timestamptz NOT NULL,
    received_at timestamptz NOT NULL
);

CREATE TABLE leaderboard_snapshots (
    marathon_id text NOT NULL REFERENCES marathons (id) ON DELETE CASCADE,
    taken_at    timestamptz NOT NULL,
    accounts    integer NOT NULL,
    rows        jsonb NOT NULL,
    PRIMARY KEY (marathon_id, taken_at)
);

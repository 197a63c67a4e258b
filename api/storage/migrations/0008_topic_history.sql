-- Bounded history of stream topics, so a subscriber that reconnects resumes after the last event
-- it saw (`after:` cursors), and a process whose broker connection dropped fills the gap.
--
-- A topic's epoch names its numbering: if the topic's sequence is ever reset (its row deleted,
-- the database rebuilt), the topic gets a new epoch and old cursors are refused as "reset"
-- instead of being matched against unrelated numbers.
ALTER TABLE topic_sequences
    DROP CONSTRAINT topic_sequences_sequence_check,
    ADD CONSTRAINT topic_sequences_sequence_check CHECK (sequence >= 0),
    ADD COLUMN epoch text NOT NULL
        DEFAULT substr(md5(random()::text || clock_timestamp()::text), 1, 10);

CREATE TABLE topic_history (
    topic        text        NOT NULL,
    sequence     bigint      NOT NULL,
    published_at timestamptz NOT NULL,
    type         text        NOT NULL,
    payload      json        NOT NULL,
    PRIMARY KEY (topic, sequence)
);

CREATE INDEX topic_history_published_at ON topic_history (published_at);

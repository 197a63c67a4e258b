"""PostgreSQL: connections, migrations, the embedded server, topic history, latest prices."""

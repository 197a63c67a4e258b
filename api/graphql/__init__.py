"""GraphQL machinery every feed uses and no feed owns: context, errors, permissions, scalars, input
text rules, document limits, resumable streams, the hub glue, compiled plans and shared execution
(fan-out)."""

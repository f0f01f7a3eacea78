"""Serving helpers: TF Serving warmup records, REST and gRPC clients, batch scoring."""

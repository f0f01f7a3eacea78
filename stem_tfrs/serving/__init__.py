"""Serving helpers: TF Serving warmup records, REST and gRPC clients, batch scoring, and an
export run in TensorFlow's C++ session, as TF Serving runs it."""

"""Pipeline stages: one thin command per DVC stage, each over the library; no stage imports another."""

"""One recipe per run kind: karma, sasrec, popularity, frozen (see `karma.runs.base.Recipe`)."""

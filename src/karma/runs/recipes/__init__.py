"""One recipe per run kind: karma, sasrec, popularity, frozen, query-floor (see
`karma.runs.base.Recipe`)."""

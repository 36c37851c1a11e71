-- Room on each page for the new version of a row: a step boundary that changes no indexed
-- column (the lease expiry is kept while more than half of it is left) is then a HOT update,
-- which adds nothing to the four indexes of executions. Applies to pages written from now on.
ALTER TABLE executions SET (fillfactor = 70);
ALTER TABLE step_runs SET (fillfactor = 90);

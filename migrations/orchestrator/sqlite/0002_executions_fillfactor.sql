-- PostgreSQL's fillfactor has no SQLite counterpart; this keeps the two dialects' migration
-- lists the same.
SELECT 1;

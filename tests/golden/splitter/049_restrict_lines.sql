\restrict abc123
SET statement_timeout = 0;
SELECT 1;
\unrestrict abc123

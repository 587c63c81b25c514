SELECT E'a''b;\'';
SELECT 1;

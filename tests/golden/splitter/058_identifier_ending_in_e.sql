SELECT some'x';
SELECT 2;

SELECT E'a', 'b\';
SELECT 2;

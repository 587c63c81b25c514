SELECT E'a' -- comment
  'b\';
SELECT 2;

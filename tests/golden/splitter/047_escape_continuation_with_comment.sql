SELECT E'a' -- comment
  'it\'s;';
SELECT 2;

SELECT 1 -- not; the end
  + 2;
SELECT 3;

SELECT 1;
  /* open /* nested */
SELECT 2;

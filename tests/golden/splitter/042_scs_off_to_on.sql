SET standard_conforming_strings TO off;
SELECT 'a\';b';
SET standard_conforming_strings = on;
SELECT 'c\';
SELECT 3;

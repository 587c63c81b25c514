SET standard_conforming_strings = 'off';
SELECT 'x\'y';
RESET standard_conforming_strings;
SELECT 'z\';
SET SESSION standard_conforming_strings = false;
SELECT '\'';

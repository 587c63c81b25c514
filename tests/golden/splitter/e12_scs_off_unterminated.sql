SET standard_conforming_strings = off;
SELECT 'a\';

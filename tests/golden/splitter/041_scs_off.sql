SET standard_conforming_strings = off;
SELECT 'it\'s; fine';
SELECT 2;

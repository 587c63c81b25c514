SET standard_conforming_strings = off;
SELECT B'1\', 2;
SELECT U&'x\0041';
SELECT 3;

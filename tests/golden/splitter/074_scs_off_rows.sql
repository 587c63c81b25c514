SET standard_conforming_strings = off;
INSERT INTO t VALUES ('a\'b;', 'c'), (U&'d\\', '\\'), (N'n\';', B'01', X'0f', E'e\';', 'x''y;');
SELECT ('f\'', (('g\';')));
SELECT U&'d\' AS u, (U&'e\', 'f;');
SET standard_conforming_strings = on;
SELECT ('h\', 'i;');

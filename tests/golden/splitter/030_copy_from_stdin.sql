CREATE TABLE t (a int, b text);
COPY t (a, b) FROM stdin;
1	semi;colon
2	it's
\.
SELECT count(*) FROM t;

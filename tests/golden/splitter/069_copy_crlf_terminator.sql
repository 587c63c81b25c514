CREATE TABLE t (a text);
COPY t FROM stdin;
x
\.
SELECT 1;

CREATE TABLE t (a text);
COPY t FROM stdin;
\N
a\.b
\.
COPY t FROM stdin;
x
\.

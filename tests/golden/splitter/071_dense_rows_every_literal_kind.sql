INSERT INTO public.events VALUES
	(1, 'it''s; done', E'line\nnext \'quoted\'; C:\\temp\\', '{"a": "b\"c", "d": [1, {"e": ";)"}]}', NULL, -3.5, '2024-01-02 03:04:05+00'),
	(2, '''', E'''', E'\\', e'\'', '', U&'d\0061t;a', N'n;''', B'0101', X'FF', "weird""col;", 7 - -1, 8 / 2),
	(3, ('(;'), (('x;', E'y\';'), ((('z;')))), now() - interval '1 day; ago', ARRAY['a;', E'b\'']::text[]);
SELECT 2;

SELECT $fn$ body with $$ inside; and $x$ too $fn$;
SELECT 2;

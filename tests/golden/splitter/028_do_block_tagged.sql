DO LANGUAGE plpgsql $do$
DECLARE s text := $$x;y$$;
BEGIN
  PERFORM 1;
END
$do$;

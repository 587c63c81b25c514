-- just a comment
/* and a block
   comment */

-- end

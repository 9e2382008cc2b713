<?php echo "classic";
